#!/usr/bin/env bash
# Cost per request as the work grows, shardstream beside the kit's Go gateway (gogw, the
# anchor), both measured in every row of the same run so that the figures read as ratios.
# Three sweeps:
#   shards   N in 8 32 64, the same total (6400 items: 800/200/100 per shard), c=4, a duration;
#   items    8 shards, 20 200 2000 20000 items per shard, c=4, a fixed request count
#            (a 20000-item shard takes 4 s to drip, the answer is ~96 MB);
#   clients  8 shards x 50 items, c in 1 4 16 32 64 128, a duration.
# Per row and gateway (each started fresh; shardsim once per shard layout), the kit's ttfb
# measures TTFI and TTLB p50/p99, req/s, and for the gateway's process tree (-pid) the CPU
# time (utime+stime from /proc over the measured phase) per successful answer and the peak
# RSS (sum of VmRSS sampled every 50 ms, warm-ups included). shardstream runs as one process
# (workers = 1, the config of bench/fanout/config.py), so its tree is that process; gogw is
# one process too. Shards as in bench/fanout.sh: shard k sends its first byte after
# 20 + 5*(k mod 8) ms, then one item every DRIP ms.
#
#   bench/scaling.sh                       # all three sweeps, ~6 min (estimate: ~1 min shards, ~2.5 items, ~2 clients)
#   QUICK=1 bench/scaling.sh               # smoke run, fewer points, short loads, ~1.5 min
#   SWEEPS=clients CLIENTS="1 64" bench/scaling.sh
#
# Knobs (env): SWEEPS ("shards items clients"); QUICK=1 (the defaults below become those in
# brackets). shards: SHARD_NS ("8 32 64" [8 64]), TOTAL (items in a full answer, 6400),
# SHARDS_C (4), SHARDS_DUR (8s [1.5s]). items: LIST_SIZES (items per shard,
# "20 200 2000 20000" [20 2000 20000]), LIST_SHARDS (8), LIST_C (4), requests per row =
# LIST_BUDGET / items per shard (200000 [20000]) bounded to LIST_MIN_N..LIST_MAX_N
# (12..200 [4..40]): 200 200 100 12. clients: CLIENTS ("1 4 16 32 64 128" [1 16 128]),
# CLIENTS_SHARDS (8), CLIENTS_ITEMS (50), CLIENTS_DUR (8s [1.5s]). Warm-ups: max(c, 3)
# requests. DRIP (ms per item, 0.2), TIMEOUT (ttfb per request, 60s). SCALING_REV
# (benchmark this commit, taken with git archive, instead of the work tree as it is),
# SCALING_PYTHON (a python with shardstream + twisted; default: a venv in
# bench/out/scaling-venv with a snapshot of this tree installed), PLOT_PYTHON (a python with
# matplotlib; default bench/out/plot-venv, made with pip on first use; without matplotlib
# there is no PNG, the tables are still written), BENCH_BUILD, BENCH_KIT.
#
# Results: bench/out/scaling-<stamp>/ (runs/*.json one per row and gateway, logs/, conf/,
# meta.json, results.md, scaling.png), bench/out/scaling-latest -> it.
set -euo pipefail
BENCH_NAME=scaling
. "$(dirname "$0")/lib.sh"   # here (bench/), root (the project), the helpers
kit_build

q() { if [ "${QUICK:-0}" = 1 ]; then echo "$2"; else echo "$1"; fi; }
SWEEPS=${SWEEPS:-"shards items clients"}
SHARD_NS=${SHARD_NS:-$(q "8 32 64" "8 64")}
TOTAL=${TOTAL:-6400}
SHARDS_C=${SHARDS_C:-4}
SHARDS_DUR=${SHARDS_DUR:-$(q 8s 1.5s)}
LIST_SIZES=${LIST_SIZES:-$(q "20 200 2000 20000" "20 2000 20000")}
LIST_SHARDS=${LIST_SHARDS:-8}
LIST_C=${LIST_C:-4}
LIST_BUDGET=${LIST_BUDGET:-$(q 200000 20000)}
LIST_MIN_N=${LIST_MIN_N:-$(q 12 4)}
LIST_MAX_N=${LIST_MAX_N:-$(q 200 40)}
CLIENTS=${CLIENTS:-$(q "1 4 16 32 64 128" "1 16 128")}
CLIENTS_SHARDS=${CLIENTS_SHARDS:-8}
CLIENTS_ITEMS=${CLIENTS_ITEMS:-50}
CLIENTS_DUR=${CLIENTS_DUR:-$(q 8s 1.5s)}
DRIP=${DRIP:-0.2}
TIMEOUT=${TIMEOUT:-60s}

stamp=$(date -u +%Y%m%d-%H%M%S)
out=${SCALING_OUT:-$here/out/scaling-$stamp}
mkdir -p "$out/runs" "$out/logs" "$out/conf"
ln -sfn "$(basename "$out")" "$here/out/scaling-latest" 2>/dev/null || true
STARTED_AT=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
command_of bench/scaling.sh QUICK SWEEPS SHARD_NS TOTAL SHARDS_C SHARDS_DUR LIST_SIZES LIST_SHARDS \
  LIST_C LIST_BUDGET LIST_MIN_N LIST_MAX_N CLIENTS CLIENTS_SHARDS CLIENTS_ITEMS CLIENTS_DUR DRIP \
  TIMEOUT SCALING_REV SCALING_PYTHON
snapshot_python "$here/out/scaling-venv" "${SCALING_REV:-}" "${SCALING_PYTHON:-}"
write_meta "$out/meta.json" "$STARTED_AT" "${SCALING_REV:-}" "$(python3 -c '
import json, sys
print(json.dumps(dict(zip(sys.argv[1::2], sys.argv[2::2])))[1:-1])' \
  sweeps "$SWEEPS" shards_c "$SHARDS_C" shards_dur "$SHARDS_DUR" total "$TOTAL" \
  list_c "$LIST_C" list_budget "$LIST_BUDGET" list_min_n "$LIST_MIN_N" list_max_n "$LIST_MAX_N" \
  clients_dur "$CLIENTS_DUR" drip "$DRIP" workers 1)"

# --- one shardsim per shard layout, kept while consecutive rows use the same one
SIM_KEY=""
shards_for() { # shards_for N ITEMS
  [ "$SIM_KEY" != "$1x$2" ] || return 0
  [ -z "$SIM_KEY" ] || stop_bg "$SIM_PID"
  start_shards "n$1-i$2" "$1" "$2" "$DRIP"
  SIM_KEY="$1x$2"
}

# --- one row: both gateways, fresh each, the same load; runs/<sweep>-n<N>-i<ITEMS>-c<C>-<gw>.json
row() { # row SWEEP N ITEMS C LOADARG... (ttfb's -d DUR or -n COUNT)
  local sweep=$1 n=$2 items=$3 c=$4 gw tag f
  shift 4
  shards_for "$n" "$items"
  for gw in gogw shardstream; do
    tag=$sweep-n$n-i$items-c$c-$gw
    f=$out/runs/$tag.json
    if ! start_gateway "$gw" "$tag"; then
      note "$tag: $gw did not start (rc ${GW_RC:-?}): $(tail -3 "$out/logs/$tag.log" | tr '\n' ' ')"
      exit 1
    fi
    "$B/ttfb" -url "http://127.0.0.1:$GW_PORT/items" -c "$c" "$@" -warmup $((c < 3 ? 3 : c)) \
      -timeout "$TIMEOUT" -expect-items $((n * items)) -json -pid "$GW_PID" \
      -tag sweep="$sweep" -tag n="$n" -tag items="$items" -tag gateway="$gw" \
      -tag load="$*" -tag start_ms="$GW_START_MS" >"$f" 2>>"$out/logs/ttfb.err" &
    LOAD_PID=$!
    wait "$LOAD_PID" || note "$tag: ttfb exited with $? (see logs/ttfb.err)"
    LOAD_PID=""
    stop_bg "$GW_PID"
    python3 "$here/scaling_plot.py" --line "$f" >&2 || true
  done
}

for sweep in $SWEEPS; do
  case $sweep in
    shards)
      for n in $SHARD_NS; do
        [ $((TOTAL % n)) = 0 ] || note "shards: $TOTAL items do not split evenly over $n shards; $((TOTAL / n)) each"
        echo "== shards: N=$n x $((TOTAL / n)) items, c=$SHARDS_C, $SHARDS_DUR" >&2
        row shards "$n" $((TOTAL / n)) "$SHARDS_C" -d "$SHARDS_DUR"
      done ;;
    items)
      for items in $LIST_SIZES; do
        reqs=$((LIST_BUDGET / items))
        reqs=$((reqs < LIST_MIN_N ? LIST_MIN_N : reqs > LIST_MAX_N ? LIST_MAX_N : reqs))
        echo "== items: N=$LIST_SHARDS x $items items, c=$LIST_C, $reqs requests" >&2
        row items "$LIST_SHARDS" "$items" "$LIST_C" -n "$reqs"
      done ;;
    clients)
      for c in $CLIENTS; do
        echo "== clients: N=$CLIENTS_SHARDS x $CLIENTS_ITEMS items, c=$c, $CLIENTS_DUR" >&2
        row clients "$CLIENTS_SHARDS" "$CLIENTS_ITEMS" "$c" -d "$CLIENTS_DUR"
      done ;;
    *) echo "scaling: unknown sweep '$sweep' (shards, items, clients)" >&2; exit 2 ;;
  esac
done
[ -z "$SIM_KEY" ] || stop_bg "$SIM_PID"

python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); m["loadavg_end"]=open("/proc/loadavg").read().split()[:3]; json.dump(m, open(sys.argv[1],"w"))' \
  "$out/meta.json"

# --- tables (stdlib) and the plot (matplotlib, in a bench-only venv)
plot_py=${PLOT_PYTHON:-$here/out/plot-venv/bin/python}
if [ -z "${PLOT_PYTHON:-}" ] && ! "$plot_py" -c 'import matplotlib' 2>/dev/null; then
  echo "scaling: installing matplotlib into $here/out/plot-venv" >&2
  { python3 -m venv "$here/out/plot-venv" && "$here/out/plot-venv/bin/pip" install -q matplotlib; } 2>&1 \
    | grep -v "^WARNING: Location" >&2 || true
fi
if "$plot_py" -c 'import matplotlib' 2>/dev/null; then
  "$plot_py" "$here/scaling_plot.py" "$out"
else
  note "no matplotlib ($plot_py): results.md without a plot"
  python3 "$here/scaling_plot.py" --no-plot "$out"
fi
cat "$out/results.md"
echo "scaling: results in $out/results.md$([ ! -f "$out/scaling.png" ] || echo ", plot $out/scaling.png")" >&2
