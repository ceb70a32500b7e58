#!/usr/bin/env bash
# Old code against the current tree on bench/vs_img2dataset.sh's capcrawl commands (download of
# the 3,000 JPEGs, then shards --no-filter), alternated A B A B ... in one run, so that a change
# can be told from the machine's noise. Prints each command's wall and CPU seconds, and each
# pair's (download + shards) wall-time ratio old/new: above 1 means the current tree is faster.
#
#   bash bench/ab_checkouts.sh 3e1f7af        # 5 pairs
#   PAIRS=8 bash bench/ab_checkouts.sh HEAD~1
#   SET=photos bash bench/ab_checkouts.sh 3427954   # another image set (bench/imagesets.py)
#   QUALITY=1 ...                                   # then bench/quality_guard.py on both last outputs
#
# The old revision is exported with `git archive` into $BENCH_DIR/ab-old; both trees run with
# the project's venv (PYTHONPATH selects the tree), so only the code differs.
source "$(dirname "$0")/lib.sh"
OLD_REV="${1:?usage: bash bench/ab_checkouts.sh OLD_REVISION}"
PAIRS="${PAIRS:-5}"
OLD="$BENCH_DIR/ab-old"
RES="$BENCH_DIR/ab_checkouts-$SET.jsonl"

if [ -z "${CCB_IN_NETNS:-}" ]; then
    prepare_tools
    build_site
    set_urls >/dev/null
    rm -rf "$OLD" && mkdir -p "$OLD"
    git -C "$REPO" archive "$OLD_REV" | tar -x -C "$OLD"
    for pkg in capcrawl common crawler filter shards; do
        [ -d "$OLD/$pkg" ] && "$PY" -m compileall -q "$OLD/$pkg"
    done
fi
enter_netns "$@"
trap stop_nginx EXIT
start_nginx
URLS="$(set_urls)"

entry() {  # the command-line module of a tree: capcrawl/__main__.py, crawler/__main__.py (cc82ac7..), crawler/cli.py before
    if [ -f "$1/capcrawl/__main__.py" ]; then echo capcrawl
    elif [ -f "$1/crawler/__main__.py" ]; then echo crawler
    else echo crawler.cli; fi
}
run_tree() {  # run_tree LABEL TREE PAIR
    local work="$BENCH_DIR/runs/$SET/ab-$1-work" out="$BENCH_DIR/runs/$SET/ab-$1-out" mod
    mod="$(entry "$2")"
    rm -rf "$work" "$out"
    (cd "$2" && PYTHONPATH="$2" "$PY" "$REPO/bench/measure.py" --label "$1/download" --out "$RES" -- \
        "$PY" -m "$mod" -q download "$URLS" --work "$work" "${CAPCRAWL_DOWNLOAD_ARGS[@]}" $CAPCRAWL_VS_FLAGS >/dev/null)
    (cd "$2" && PYTHONPATH="$2" "$PY" "$REPO/bench/measure.py" --label "$1/shards" --out "$RES" -- \
        "$PY" -m "$mod" -q shards --work "$work" --out "$out" --no-filter >/dev/null)
}

mkdir -p "$BENCH_DIR/runs/$SET"
: >"$RES"
for i in $(seq "$PAIRS"); do
    echo "pair $i ..." >&2
    run_tree old "$OLD" "$i"
    run_tree new "$REPO" "$i"
done

"$PY" - "$RES" <<'PYEOF'
import collections, json, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    runs[r["label"]].append(r)
for label in ("old/download", "new/download", "old/shards", "new/shards"):
    v = runs[label]
    print(f"{label:<13} wall {[r['wall_s'] for r in v]} (median {statistics.median(r['wall_s'] for r in v):.2f})"
          f"  CPU {[r['cpu_s'] for r in v]}  crawl process CPU {[r['cpu_main_s'] for r in v]}")
total = {t: [d["wall_s"] + s["wall_s"] for d, s in zip(runs[f"{t}/download"], runs[f"{t}/shards"])] for t in ("old", "new")}
ratios = [o / n for o, n in zip(total["old"], total["new"])]
print("pair ratios old/new (download + shards wall):", ", ".join(f"{r:.3f}" for r in ratios))
print(f"median {statistics.median(ratios):.3f}")
PYEOF
if [ "${QUALITY:-0}" = 1 ]; then
    for t in old new; do
        "$PY" "$REPO/bench/quality_guard.py" "$BENCH_DIR/runs/$SET/ab-$t-out" --site "$BENCH_DIR/site" \
            --label "$SET/ab-$t" --json "$BENCH_DIR/quality.jsonl"
    done
fi
