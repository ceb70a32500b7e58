#!/usr/bin/env bash
# Crawl throughput of crawl workers sharing one frontier in Redis, against today's single process:
# crawl_bench.sh's site (100 pages, 3,000 JPEGs, two loopback hosts, one nginx), crawled by
#   single  `capcrawl crawl` (embedded: no Redis)
#   wN      `capcrawl crawl --frontier redis://127.0.0.1:$BENCH_REDIS_PORT/0 --workers N`, N in $WORKERS
# alternated REPS times in a private network namespace. Per run: images/s, pages/s, CPU s per image
# (every process of the run, plus the Redis server's own CPU from INFO), and Redis operations per
# URL: commands Redis executed (INFO commandstats: the scripts' inner commands included) and round
# trips the workers made (stats.json events frontier/round_trips), per image URL recorded.
#
#   bash bench/cluster_bench.sh                 # REPS=2 WORKERS="1 2 4"
#   REPS=3 WORKERS="2 4" bash bench/cluster_bench.sh
source "$(dirname "$0")/lib.sh"
REPS="${REPS:-2}"
WORKERS="${WORKERS:-1 2 4}"
BENCH_REDIS_PORT="${BENCH_REDIS_PORT:-18090}"
CAPCRAWL_FLAGS="${CAPCRAWL_FLAGS:---concurrency 128 --per-host-concurrency 128 --no-autothrottle}"

if [ -z "${CCB_IN_NETNS:-}" ]; then
    prepare_tools
    need_apt redis-server redis-server
    build_site
fi
enter_netns "$@"
RDIR="$BENCH_DIR/redis"
rm -rf "$RDIR" && mkdir -p "$RDIR"
redis-server --bind 127.0.0.1 --port "$BENCH_REDIS_PORT" --dir "$RDIR" --save "" --appendonly yes \
    --daemonize yes --pidfile "$RDIR/redis.pid" --logfile "$RDIR/redis.log"
stop_all() { stop_nginx; redis-cli -p "$BENCH_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true; }
trap stop_all EXIT
start_nginx
for _ in $(seq 50); do redis-cli -p "$BENCH_REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
FRONTIER="redis://127.0.0.1:$BENCH_REDIS_PORT/0"

RES="$BENCH_DIR/cluster_bench.jsonl"
RUNS="$BENCH_DIR/cluster-runs"
mkdir -p "$RUNS"
: >"$RES"
redis_counts() {  # commands executed and CPU seconds of the Redis server so far
    redis-cli -p "$BENCH_REDIS_PORT" info commandstats | awk -F'[=,:]' '/^cmdstat_/ {n += $3} END {printf "%d ", n}'
    redis-cli -p "$BENCH_REDIS_PORT" info cpu | awk -F: '/^used_cpu_(user|sys):/ {s += $2} END {printf "%.3f\n", s}'
}
for i in $(seq "$REPS"); do
    for mode in single $(printf 'w%s ' $WORKERS); do
        work="$RUNS/$mode-$i"
        rm -rf "$work"
        echo "rep $i: $mode ..." >&2
        extra=()
        if [ "$mode" != single ]; then
            redis-cli -p "$BENCH_REDIS_PORT" flushall >/dev/null
            redis-cli -p "$BENCH_REDIS_PORT" config resetstat >/dev/null
            extra=(--frontier "$FRONTIER" --workers "${mode#w}")
        fi
        read -r cmds0 rcpu0 < <(redis_counts)
        # shellcheck disable=SC2086
        "$PY" "$REPO/bench/measure.py" --out "$RES" --label "$mode/$i" --log "$RUNS/$mode-$i.log" -- \
            "$CAPCRAWL" -q crawl "$BENCH_DIR/seeds.txt" --max-pages 200 --max-depth 2 --work "$work" \
            --allow-private-addresses --timeout 10 --retries 0 $CAPCRAWL_FLAGS "${extra[@]}"
        read -r cmds1 rcpu1 < <(redis_counts)
        "$PY" -c 'import json,sys; s=json.load(open(sys.argv[2])); print(json.dumps({"label": sys.argv[1], "images": s["images"],
            "pages": s.get("pages", {}), "round_trips": s.get("this_run", {}).get("events", {}).get("frontier/round_trips", 0)
            if not s.get("workers") else sum(w["this_run"]["events"].get("frontier/round_trips", 0) for w in s["workers"].values()),
            "redis_commands": int(sys.argv[3]), "redis_cpu_s": float(sys.argv[4])}))' \
            "$mode/$i/stats" "$work/crawl/stats.json" "$((cmds1 - cmds0))" "$(awk -v a="$rcpu1" -v b="$rcpu0" 'BEGIN {print a - b}')" >>"$RES"
    done
done

"$PY" - "$RES" <<'PYEOF'
import json, statistics, sys
rows = {r["label"]: r for r in map(json.loads, open(sys.argv[1]))}
by_mode = {}
print(f"{'run':<10}{'wall s':>8}{'CPU s':>7}{'images ok':>10}{'img/s':>8}{'pages/s':>8}{'CPU ms/img':>11}"
      f"{'Redis cmd/URL':>14}{'trips/URL':>10}")
for label, r in rows.items():
    if label.count("/") != 1:
        continue
    st = rows[label + "/stats"]
    urls = sum(st["images"].values())
    ok, pages = st["images"].get("ok", 0), sum(st["pages"].values())
    cpu = r["cpu_s"] + st["redis_cpu_s"]
    mode = label.split("/")[0]
    by_mode.setdefault(mode, []).append(ok / r["wall_s"])
    print(f"{label:<10}{r['wall_s']:>8.1f}{cpu:>7.1f}{ok:>10}{ok / r['wall_s']:>8.1f}{pages / r['wall_s']:>8.1f}"
          f"{1000 * cpu / max(ok, 1):>11.2f}{st['redis_commands'] / max(urls, 1):>14.1f}{st['round_trips'] / max(urls, 1):>10.2f}")
base = statistics.median(by_mode["single"])
print("median images/s: " + ", ".join(f"{m} {statistics.median(v):.1f} ({statistics.median(v) / base:.2f}x)" for m, v in by_mode.items()))
PYEOF
