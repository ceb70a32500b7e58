#!/usr/bin/env bash
# Peak memory of `capcrawl download` and then `capcrawl shards --no-filter` against URL-list
# length: 100k and 1M URLs by default (the 3,000 files repeated with distinct query strings
# ?i=N, which nginx ignores), nginx on loopback, private network namespace.
# Goal: peak <= 1 GB and the largest run's peak within 20% of the smallest's.
#
#   bash bench/memory_bench.sh                       # 100000 and 1000000 URLs, 160x120 images (~25 min)
#   SIZES="20000 100000" bash bench/memory_bench.sh  # quicker
#   SIZES="20000 100000" LIST_IMAGES=img bash bench/memory_bench.sh   # the 640x480 images (much slower)
#
# Measured per run (bench/measure.py): tree_peak_rss_kb = peak of the SUM of RSS over capcrawl's
# whole process tree (reactor process + image workers + multiprocessing's resource tracker),
# sampled from /proc every 0.2 s; time_v_max_rss_kb = /usr/bin/time -v (largest single process).
# The lists point at 160x120 copies by default so that 120k downloads take minutes, not an
# hour: what is measured is growth with the number of URLs, which pixels do not change.
source "$(dirname "$0")/lib.sh"
SIZES="${SIZES:-100000 1000000}"
LIST_IMAGES="${LIST_IMAGES:-small}"
CAPCRAWL_FLAGS="${CAPCRAWL_FLAGS:---concurrency 128 --per-host-concurrency 128 --no-autothrottle}"

if [ -z "${CCB_IN_NETNS:-}" ]; then
    prepare_tools
    # shellcheck disable=SC2086
    build_site --list-sizes $SIZES --list-images "$LIST_IMAGES"
fi
enter_netns "$@"
trap stop_nginx EXIT
start_nginx

RES="$BENCH_DIR/memory_bench.jsonl"
mkdir -p "$BENCH_DIR/runs"
: >"$RES"
for n in $SIZES; do
    work="$BENCH_DIR/runs/mem-$n"
    rm -rf "$work"
    echo "download of $n URLs ..." >&2
    # shellcheck disable=SC2086
    "$PY" "$REPO/bench/measure.py" --out "$RES" --label "download/$n" --log "$BENCH_DIR/runs/mem-$n.log" -- \
        "$CAPCRAWL" -q download "$BENCH_DIR/urls-$n.csv" --work "$work" --caption-col caption \
        --allow-private-addresses --timeout 10 --retries 0 $CAPCRAWL_FLAGS
    "$PY" -c 'import json,sys; s=json.load(open(sys.argv[1])); print(json.dumps({"label": "stats/"+sys.argv[2], "images": s["images"]}))' \
        "$work/crawl/stats.json" "$n" >>"$RES"
    echo "shards --no-filter of $n rows ..." >&2
    "$PY" "$REPO/bench/measure.py" --out "$RES" --label "shards/$n" --log "$BENCH_DIR/runs/mem-$n-shards.log" -- \
        "$CAPCRAWL" -q shards --work "$work" --out "$work-out" --no-filter
    rm -rf "$work-out"
done

"$PY" - "$RES" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
stats = {r["label"].split("/")[1]: r["images"] for r in rows if r["label"].startswith("stats/")}
for step in ("download", "shards"):
    runs = [r for r in rows if r["label"].startswith(step + "/")]
    print(f"{step:>9}{'URLs':>9}{'wall s':>9}{'rows/s':>8}{'tree peak MB':>14}{'time -v MB':>12}  statuses")
    for r in runs:
        n = r["label"].split("/")[1]
        print(f"{'':>9}{n:>9}{r['wall_s']:>9.1f}{int(n)/r['wall_s']:>8.0f}{r['tree_peak_rss_kb']/1024:>14.0f}"
              f"{r['time_v_max_rss_kb']/1024:>12.0f}  {stats.get(n) if step == 'download' else ''}")
    if len(runs) >= 2:
        a, b = runs[0]["tree_peak_rss_kb"], runs[-1]["tree_peak_rss_kb"]
        print(f"{step}: growth {runs[0]['label']} -> {runs[-1]['label']}: {b / a:.2f}x (goal <= 1.20x); "
              f"largest peak {max(r['tree_peak_rss_kb'] for r in runs) / 1024:.0f} MB (goal <= 1024)")
PYEOF
