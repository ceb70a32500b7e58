#!/usr/bin/env bash
# capcrawl (download + shards) against img2dataset 1.47.0 on the same 3,000 JPEGs served by
# nginx on loopback, inside a private network namespace. Alternates A B A B ... and prints each
# pair's images/s ratio (capcrawl / img2dataset) and the median ratio last. Goal: >= 1.5.
#
#   bash bench/vs_img2dataset.sh              # 3 pairs
#   PAIRS=5 bash bench/vs_img2dataset.sh
#   CAPCRAWL_FLAGS="--per-host-concurrency 8" bash bench/vs_img2dataset.sh   # other capcrawl options
#   SET=photos PAIRS=5 bash bench/vs_img2dataset.sh   # another image set (bench/imagesets.py)
#
# capcrawl's images/s count samples written plus those `shards` dropped as duplicates (both
# processed); each capcrawl output is also checked by bench/quality_guard.py when QUALITY=1.
#
# Results: $BENCH_DIR/vs_img2dataset.jsonl (one line per command run) and the table printed.
source "$(dirname "$0")/lib.sh"
PAIRS="${PAIRS:-3}"
# All 3,000 URLs are on one host: capcrawl's polite per-host defaults (8 per host, AutoThrottle)
# are lifted to match img2dataset, which has no per-host limit (2 processes x 64 threads).
CAPCRAWL_FLAGS="${CAPCRAWL_FLAGS:-$CAPCRAWL_VS_FLAGS}"

if [ -z "${CCB_IN_NETNS:-}" ]; then
    prepare_tools
    prepare_img2dataset
    build_site
    set_urls >/dev/null
fi
enter_netns "$@"
trap stop_nginx EXIT
start_nginx

RES="$BENCH_DIR/vs_img2dataset-$SET.jsonl"
RUNS="$BENCH_DIR/runs/$SET"
: >"$RES"
URLS="$(set_urls)"
measure() { "$PY" "$REPO/bench/measure.py" --out "$RES" "$@"; }
count() { "$PY" "$REPO/bench/count_samples.py" "$1" --urls "$URLS"; }

run_img2dataset() {  # run_img2dataset N
    local out="$RUNS/i2d-$1"
    rm -rf "$out"
    measure --label "img2dataset/$1" --log "$RUNS/i2d-$1.log" -- "$I2D_VENV/bin/img2dataset" --url_list "$URLS" --input_format csv \
        --url_col url --caption_col caption --output_format webdataset --image_size 256 --resize_mode keep_ratio \
        --processes_count 2 --thread_count 64 --number_sample_per_shard 1000 --timeout 10 --retries 0 \
        --enable_wandb False --output_folder "$out"
    echo "{\"label\": \"img2dataset/$1/count\", \"count\": $(count "$out")}" >>"$RES"
}

run_capcrawl() {  # run_capcrawl N
    local work="$RUNS/cc-$1-work" out="$RUNS/cc-$1-out"
    rm -rf "$work" "$out"
    # shellcheck disable=SC2086
    measure --label "capcrawl/$1/download" --log "$RUNS/cc-$1.log" -- "$CAPCRAWL" -q download "$URLS" --work "$work" \
        "${CAPCRAWL_DOWNLOAD_ARGS[@]}" $CAPCRAWL_FLAGS
    measure --label "capcrawl/$1/shards" --log "$RUNS/cc-$1.log" -- "$CAPCRAWL" -q shards --work "$work" --out "$out" --no-filter
    echo "{\"label\": \"capcrawl/$1/count\", \"count\": $(count "$out")}" >>"$RES"
    if [ "${QUALITY:-0}" = 1 ]; then
        "$PY" "$REPO/bench/quality_guard.py" "$out" --site "$BENCH_DIR/site" --label "$SET/capcrawl/$1" --json "$BENCH_DIR/quality.jsonl" >&2
    fi
}

mkdir -p "$RUNS"
echo "set: $SET ($URLS); capcrawl flags: $CAPCRAWL_FLAGS" >&2
for i in $(seq "$PAIRS"); do
    echo "pair $i: img2dataset ..." >&2
    run_img2dataset "$i"
    echo "pair $i: capcrawl ..." >&2
    run_capcrawl "$i"
done

"$PY" - "$RES" "$PAIRS" <<'PYEOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {r["label"]: r for r in rows}
ratios = []
print(f"{'pair':<5}{'tool':<13}{'wall s':>8}{'CPU s':>7}{'images':>8}{'img/s':>8}{'maxRSS MB':>11}{'treeRSS MB':>12}  missing  dup-dropped")
for i in range(1, int(sys.argv[2]) + 1):
    i2d, cnt_i = by[f"img2dataset/{i}"], by[f"img2dataset/{i}/count"]["count"]
    dl, sh, cnt_c = by[f"capcrawl/{i}/download"], by[f"capcrawl/{i}/shards"], by[f"capcrawl/{i}/count"]["count"]
    # capcrawl: wall = download + shards; RSS = the larger of the two commands (they run one after the other)
    cc = {"wall_s": dl["wall_s"] + sh["wall_s"],
          "time_v_max_rss_kb": max(dl["time_v_max_rss_kb"], sh["time_v_max_rss_kb"]),
          "tree_peak_rss_kb": max(dl["tree_peak_rss_kb"], sh["tree_peak_rss_kb"]),
          "cpu_s": dl["cpu_s"] + sh["cpu_s"]}
    rate = {}
    for tool, r, c in (("img2dataset", i2d, cnt_i), ("capcrawl", cc, cnt_c)):
        done = c["samples"] + c.get("dropped", 0)  # duplicates that shards dropped were processed too
        rate[tool] = done / r["wall_s"]
        print(f"{i:<5}{tool:<13}{r['wall_s']:>8.1f}{r['cpu_s']:>7.1f}{done:>8}{rate[tool]:>8.1f}"
              f"{r['time_v_max_rss_kb']/1024:>11.0f}{r['tree_peak_rss_kb']/1024:>12.0f}  {c['missing']:>7}  {c.get('dropped', 0)}")
    print(f"     capcrawl download {dl['wall_s']:.1f} s + shards {sh['wall_s']:.1f} s")
    ratios.append(rate["capcrawl"] / rate["img2dataset"])
    print(f"pair {i} ratio (capcrawl/img2dataset images/s): {ratios[-1]:.2f}")
print(f"median ratio: {statistics.median(ratios):.2f}")
PYEOF
