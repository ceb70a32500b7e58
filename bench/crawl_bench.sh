#!/usr/bin/env bash
# Crawl throughput: the 3,000 JPEGs linked from 100 HTML pages on two loopback hosts
# (127.0.0.1 and 127.0.0.2, one nginx), reached from one index page per host; `capcrawl crawl`
# on the pages against `capcrawl download` of the same images as a URL list. Alternates
# crawl/download REPS times in a private network namespace. Goal: crawl images/s >= 0.8x download.
#
#   bash bench/crawl_bench.sh            # REPS=2
#   REPS=3 CAPCRAWL_FLAGS="--per-host-concurrency 8" bash bench/crawl_bench.sh
source "$(dirname "$0")/lib.sh"
REPS="${REPS:-2}"
CAPCRAWL_FLAGS="${CAPCRAWL_FLAGS:---concurrency 128 --per-host-concurrency 128 --no-autothrottle}"

if [ -z "${CCB_IN_NETNS:-}" ]; then
    prepare_tools
    build_site
fi
enter_netns "$@"
trap stop_nginx EXIT
start_nginx

RES="$BENCH_DIR/crawl_bench.jsonl"
RUNS="$BENCH_DIR/runs"
mkdir -p "$RUNS"
: >"$RES"
stats() {  # stats LABEL WORK: the run's image and page counts
    "$PY" -c 'import json,sys; s=json.load(open(sys.argv[2])); print(json.dumps({"label": sys.argv[1], "images": s["images"], "pages": s.get("pages", {})}))' \
        "$1" "$2/crawl/stats.json" >>"$RES"
}
for i in $(seq "$REPS"); do
    for mode in crawl download; do
        work="$RUNS/$mode-$i"
        rm -rf "$work"
        echo "rep $i: $mode ..." >&2
        if [ "$mode" = crawl ]; then
            src=("$BENCH_DIR/seeds.txt" --max-pages 200 --max-depth 2)
        else
            src=("$BENCH_DIR/urls.csv" --caption-col caption)
        fi
        # shellcheck disable=SC2086
        "$PY" "$REPO/bench/measure.py" --out "$RES" --label "$mode/$i" --log "$RUNS/$mode-$i.log" -- \
            "$CAPCRAWL" -q "$mode" "${src[@]}" --work "$work" --allow-private-addresses --timeout 10 --retries 0 $CAPCRAWL_FLAGS
        stats "$mode/$i/stats" "$work"
    done
done

"$PY" - "$RES" <<'PYEOF'
import json, statistics, sys
rows = {r["label"]: r for r in map(json.loads, open(sys.argv[1]))}
rates = {"crawl": [], "download": []}
print(f"{'run':<12}{'wall s':>8}{'CPU s':>7}{'images ok':>10}{'img/s':>8}{'pages':>7}{'pages/s':>9}{'tree MB':>9}")
for label, r in rows.items():
    if label.count("/") != 1:
        continue
    st = rows[label + "/stats"]
    ok, pages = st["images"].get("ok", 0), sum(st["pages"].values())
    rates[label.split("/")[0]].append(ok / r["wall_s"])
    print(f"{label:<12}{r['wall_s']:>8.1f}{r['cpu_s']:>7.1f}{ok:>10}{ok / r['wall_s']:>8.1f}{pages:>7}"
          f"{pages / r['wall_s']:>9.1f}{r['tree_peak_rss_kb'] / 1024:>9.0f}")
c, d = statistics.median(rates["crawl"]), statistics.median(rates["download"])
print(f"median images/s: crawl {c:.1f}, download {d:.1f}; crawl/download = {c / d:.2f} (goal >= 0.80)")
PYEOF
