#!/usr/bin/env bash
# Fan-out cost as the shard count grows (issue 13, requirement 7): for N in
# 8 32 64, the kit's shardsim serves N shards, and one shardstream process
# (workers = 1) and the kit's Go gateway (gogw, the anchor) each answer the
# same list at c=1 and c=16, fresh per row. Measured by the kit's ttfb: TTFI
# and TTLB p50/p99, req/s; the gateway's CPU per request from /proc/PID/stat
# (utime+stime; ttfb's figure over the measured phase, and our own
# before/after over the whole load run); its RSS at idle, at peak (VmHWM) and
# after the run (VmRSS). Then a targeted list: the same route with
# target_param = "vendor_id" and a [shard_map.vendor_id] table, asked with
# ?vendor_id=v1 (owned by s0), beside the full scatter and one shard asked
# directly. If the gateway rejects that config, the targeted rows are skipped
# with the daemon's message.
#
#   bench/fanout.sh                         # ~3-4 min
#   SHARDS="8 64" CS=16 DUR=3s bench/fanout.sh
#
# Knobs (env): SHARDS (default "8 32 64"), CS (concurrencies, "1 16"), N1
# (requests at c=1, 40), DUR (duration at c>1, 5s), ITEMS (items per shard,
# 50), FANOUT_REV (benchmark this commit, e.g. HEAD, taken with git archive,
# instead of the work tree as it is), FANOUT_PYTHON (a python with shardstream + twisted; default: a venv in
# bench/out/fanout-venv with a snapshot of this tree installed, so edits made
# during the run do not leak into it), BENCH_BUILD (kit build dir, default
# bench/out/build as bench/run.sh), BENCH_KIT.
#
# Shards: shard k holds ITEMS items, first byte after 20 + 5*(k mod 8) ms
# (20..55 ms), one item every 0.2 ms after that. The same delays repeat at
# every N, so the floors do not move with N: TTFI >= 20 ms (the fastest
# shard), TTLB >= 55 + (ITEMS-1)*0.2 ms (the slowest); for the targeted list
# (s0 only) TTFI >= 20, TTLB >= 20 + (ITEMS-1)*0.2 ms.
#
# Results: bench/out/fanout-<stamp>/ (runs/*.json one per row, logs/, conf/,
# meta.json, results.md), bench/out/fanout-latest -> it.
set -euo pipefail
BENCH_NAME=fanout
. "$(dirname "$0")/lib.sh"   # here (bench/), root (the project), the helpers
kit_build

SHARDS=${SHARDS:-"8 32 64"}
CS=${CS:-"1 16"}
N1=${N1:-40}
DUR=${DUR:-5s}
ITEMS=${ITEMS:-50}
KEY=v1            # the vendor key the targeted rows ask for; owned by s0

stamp=$(date -u +%Y%m%d-%H%M%S)
out=${FANOUT_OUT:-$here/out/fanout-$stamp}
mkdir -p "$out/runs" "$out/logs" "$out/conf"
ln -sfn "$(basename "$out")" "$here/out/fanout-latest" 2>/dev/null || true
STARTED_AT=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
command_of bench/fanout.sh SHARDS CS N1 DUR ITEMS FANOUT_REV FANOUT_PYTHON

snapshot_python "$here/out/fanout-venv" "${FANOUT_REV:-}" "${FANOUT_PYTHON:-}"

write_meta "$out/meta.json" "$STARTED_AT" "${FANOUT_REV:-}" \
  "$(printf '"items_per_shard":%s,"key":"%s","n1":%s,"dur":"%s"' "$ITEMS" "$KEY" "$N1" "$DUR")"

# --- one measured row: ttfb's JSON plus our own /proc figures under "fanout"
run_row() { # run_row GW VARIANT N C URL EXPECT PID STARTMS PROBEJSON
  local gw=$1 variant=$2 n=$3 c=$4 url=$5 expect=$6 pid=$7 start_ms=$8 probe=$9
  local f=$out/runs/n$n-c$c-$gw-$variant.json args cpu0="" cpu1="" rss0="" rss1="" hwm="" t0 t1
  if [ "$c" = 1 ]; then args="-n $N1 -warmup 3"; else args="-d $DUR -warmup $c"; fi
  if [ -n "$pid" ]; then cpu0=$(cpu_ticks "$pid"); rss0=$(status_kb "$pid" VmRSS); fi
  t0=$(now_ms)
  # shellcheck disable=SC2086
  "$B/ttfb" -url "$url" -c "$c" $args -expect-items "$expect" -json ${pid:+-pid "$pid"} \
    -tag n="$n" -tag gateway="$gw" -tag variant="$variant" >"$f.tmp" 2>>"$out/logs/ttfb.err" &
  LOAD_PID=$!
  wait "$LOAD_PID" || true
  LOAD_PID=""
  t1=$(now_ms)
  if [ -n "$pid" ] && alive "$pid"; then
    cpu1=$(cpu_ticks "$pid"); rss1=$(status_kb "$pid" VmRSS); hwm=$(status_kb "$pid" VmHWM)
  fi
  python3 - "$f.tmp" "$f" "$c" "$N1" "$HZ" "${cpu0:-}" "${cpu1:-}" "${rss0:-}" "${rss1:-}" "${hwm:-}" \
    "$start_ms" "$probe" "$((t1 - t0))" <<'PY' >&2
import json, sys
src, dst, c, n1, hz, cpu0, cpu1, rss0, rss1, hwm, start_ms, probe, wall = sys.argv[1:]
try:
    r = json.load(open(src))
except ValueError:
    r = {"failed": "no ttfb output"}
c, hz = int(c), int(hz)
warm = 3 if c == 1 else c
fo = {"wall_ms": int(wall), "warmup": warm, "probe": json.loads(probe) if probe else None}
if start_ms:
    fo["start_ms"] = int(start_ms)
if cpu0 and cpu1:
    done = r.get("ok", 0) + warm  # warm-ups answered too (their errors are rare; see warmup_errors)
    fo["cpu_s_whole"] = (int(cpu1) - int(cpu0)) / hz
    fo["cpu_ms_per_req_whole"] = 1000 * fo["cpu_s_whole"] / done if done else None
for k, v in (("rss_idle_mb", rss0), ("rss_after_mb", rss1), ("hwm_mb", hwm)):
    if v:
        fo[k] = int(v) / 1024
r["fanout"] = fo
json.dump(r, open(dst, "w"))
t = r.get("tags", {})
g = lambda k, q="p50": (r.get(k) or {}).get(q, float("nan"))
p = r.get("gateway_proc") or {}
print(f'  N={t.get("n"):<3} c={c:<3} {t.get("gateway"):<12} {t.get("variant"):<9} '
      f'TTFI {g("ttfi_ms"):7.1f} / {g("ttfi_ms", "p99"):7.1f}  TTLB {g("ttlb_ms"):7.1f} ms  '
      f'{r.get("rps", 0):7.1f} req/s  err {r.get("errors", "-")}  CPU {p.get("cpu_ms_per_req", "-")} ms/req  '
      f'RSS {fo.get("rss_idle_mb", 0):.0f}->{fo.get("hwm_mb", 0):.0f} MB')
PY
  rm -f "$f.tmp"
}

TARGET_OK=""   # "", yes, or no:<reason>
for n in $SHARDS; do
  start_shards "n$n" "$n" "$ITEMS"
  targets=(--target "v1=0" --target "v2=1" --target "v3=$((n / 2))" --target "v4=$((n - 1))")
  echo "== N=$n shards x $ITEMS items ($((n * ITEMS)) per full answer)" >&2

  # Does shardsim filter by vendor_id? Ask s0 with and without it (its first item's vendor).
  if [ ! -f "$out/shardsim-vendor-filter.json" ]; then
    v=$(python3 "$here/fanout/probe.py" "${urls[0]}/items" | python3 -c 'import json,sys; print(json.load(sys.stdin)["vendor_ids_sample"][0])')
    { echo "{\"without\":$(python3 "$here/fanout/probe.py" "${urls[0]}/items"),"
      echo "\"vendor_id=$v\":$(python3 "$here/fanout/probe.py" "${urls[0]}/items?vendor_id=$v"),"
      echo "\"vendor_id=$KEY\":$(python3 "$here/fanout/probe.py" "${urls[0]}/items?vendor_id=$KEY")}"
    } >"$out/shardsim-vendor-filter.json"
  fi

  # Does the gateway take target_param? Once per N (the shard map depends on N).
  tgt=""
  if [ "${TARGET_OK%%:*}" != no ]; then
    if start_gateway shardstream "n$n-probe-targeted" "${targets[@]}"; then
      tgt=$(python3 "$here/fanout/probe.py" "http://127.0.0.1:$GW_PORT/items?vendor_id=$KEY")
      stop_bg "$GW_PID"
      TARGET_OK=yes
      total=$(echo "$tgt" | python3 -c 'import json,sys; d=json.load(sys.stdin); print((d.get("shards") or {}).get("total", "?"))')
      if [ "$total" = 1 ]; then note "N=$n: target_param accepted; ?vendor_id=$KEY asked 1 shard: $tgt"
      else note "N=$n: target_param accepted but ?vendor_id=$KEY reported shards.total=$total (not 1): $tgt"; fi
    else
      msg=$(grep -i 'target_param' "$out/logs/n$n-probe-targeted.log" | head -1 | sed 's/^[^ ]* \[[^]]*\] //' | tr '\n' ' ')
      if [ -n "$msg" ]; then
        TARGET_OK="no:the gateway rejects the targeted config (exit ${GW_RC:-?}): $msg"
      else
        TARGET_OK="no:the gateway did not start with the targeted config (exit ${GW_RC:-?}, no mention of target_param): $(tail -3 "$out/logs/n$n-probe-targeted.log" | sed 's/^[^ ]* \[[^]]*\] //' | tr '\n' ' ')"
      fi
      note "targeted rows SKIPPED: ${TARGET_OK#no:}"
    fi
  fi

  for c in $CS; do
    for gw in gogw shardstream; do
      if start_gateway "$gw" "n$n-c$c-$gw-scatter"; then
        pr=$(python3 "$here/fanout/probe.py" "http://127.0.0.1:$GW_PORT/items")
        run_row "$gw" scatter "$n" "$c" "http://127.0.0.1:$GW_PORT/items" $((n * ITEMS)) "$GW_PID" "$GW_START_MS" "$pr"
        stop_bg "$GW_PID"
      else
        note "N=$n c=$c: $gw did not start (rc ${GW_RC:-?}): $(tail -3 "$out/logs/n$n-c$c-$gw-scatter.log" | tr '\n' ' ')"
        echo "fanout: stopping: without the full scatter there is nothing to compare (log: $out/logs/n$n-c$c-$gw-scatter.log)" >&2
        exit 1
      fi
    done
    if [ "$TARGET_OK" = yes ]; then
      if start_gateway shardstream "n$n-c$c-shardstream-targeted" "${targets[@]}"; then
        pr=$(python3 "$here/fanout/probe.py" "http://127.0.0.1:$GW_PORT/items?vendor_id=$KEY")
        expect=$(echo "$pr" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("items") or 0)')
        run_row shardstream targeted "$n" "$c" "http://127.0.0.1:$GW_PORT/items?vendor_id=$KEY" "$expect" "$GW_PID" "$GW_START_MS" "$pr"
        stop_bg "$GW_PID"
      else
        note "N=$n c=$c: targeted shardstream did not start: $(tail -3 "$out/logs/n$n-c$c-shardstream-targeted.log" | tr '\n' ' ')"
      fi
    fi
    # the floor of a targeted list: s0 asked directly, no gateway
    run_row direct s0 "$n" "$c" "${urls[0]}/items" "$ITEMS" "" "" ""
  done
  stop_bg "$SIM_PID"
done

python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); m["loadavg_end"]=open("/proc/loadavg").read().split()[:3]; m["target"]=sys.argv[2]; json.dump(m, open(sys.argv[1],"w"))' \
  "$out/meta.json" "${TARGET_OK:-untested}"
python3 "$here/fanout/report.py" "$out" >"$out/results.md"
cat "$out/results.md"
echo "fanout: results in $out/results.md" >&2
