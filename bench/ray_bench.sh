#!/usr/bin/env bash
# `capcrawl download` of 2,000 JPEGs (640x480, nginx on loopback) with the local executor and
# with `--executor ray`, alternated, inside a private network namespace:
#   local          one crawl process (image workers: one per core)
#   ray-1x2000     one input shard: one Ray task, --image-workers as the local run has
#   ray-4x500      four shards of 500: four tasks, two at a time on 2 cores, one image worker each
# Each Ray run starts its own local Ray; its start-up is read from the command's log and shown
# apart. Needs the cluster extra (pip install 'capcrawl[cluster]').
#
#   bash bench/ray_bench.sh            # 3 rounds
#   ROUNDS=5 bash bench/ray_bench.sh
source "$(dirname "$0")/lib.sh"
ROUNDS="${ROUNDS:-3}"
N=2000

if [ -z "${CCB_IN_NETNS:-}" ]; then
    prepare_tools
    build_site
fi
enter_netns "$@"
trap stop_nginx EXIT
start_nginx

RES="$BENCH_DIR/ray_bench.jsonl"
RUNS="$BENCH_DIR/ray-runs"
URLS="$BENCH_DIR/urls-first-$N.csv"
head -n $((N + 1)) "$BENCH_DIR/urls.csv" >"$URLS"
: >"$RES"
mkdir -p "$RUNS"
WORKERS="$(nproc)"

run() {  # run LABEL ROUND ARGS...
    local label="$1" round="$2"
    shift 2
    local work="$RUNS/$label-$round"
    rm -rf "$work" "$RUNS/$label-$round.log"
    # shellcheck disable=SC2086
    "$PY" "$REPO/bench/measure.py" --label "$label/$round" --out "$RES" --log "$RUNS/$label-$round.log" -- \
        "$CAPCRAWL" -v download "$URLS" --work "$work" "${CAPCRAWL_DOWNLOAD_ARGS[@]}" $CAPCRAWL_VS_FLAGS "$@"
    local ok start
    ok="$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['images'].get('ok', 0))" "$work/crawl/stats.json")"
    start="$(grep -o 'started a local Ray in [0-9.]*' "$RUNS/$label-$round.log" | grep -o '[0-9.]*$' || echo 0)"
    echo "{\"label\": \"$label/$round/extra\", \"ok\": $ok, \"ray_start_s\": $start}" >>"$RES"
}

for r in $(seq "$ROUNDS"); do
    echo "round $r ..." >&2
    run local "$r"
    run ray-1x2000 "$r" --executor ray --shard-rows "$N" --image-workers "$WORKERS"
    run ray-4x500 "$r" --executor ray --shard-rows 500
done

"$PY" - "$RES" "$ROUNDS" <<'PYEOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {r["label"]: r for r in rows}
labels = ("local", "ray-1x2000", "ray-4x500")
print(f"{'round':<6}{'run':<12}{'wall s':>8}{'Ray start s':>13}{'rest s':>8}{'CPU s':>7}{'ok':>6}")
rest = {l: [] for l in labels}
for i in range(1, int(sys.argv[2]) + 1):
    for l in labels:
        m, x = by[f"{l}/{i}"], by[f"{l}/{i}/extra"]
        rest[l].append(m["wall_s"] - x["ray_start_s"])
        print(f"{i:<6}{l:<12}{m['wall_s']:>8.1f}{x['ray_start_s']:>13.1f}{rest[l][-1]:>8.1f}{m['cpu_s']:>7.1f}{x['ok']:>6}")
for l in labels[1:]:
    print(f"median of (rest - local wall), {l}: {statistics.median(a - b for a, b in zip(rest[l], rest['local'])):.1f} s")
PYEOF
