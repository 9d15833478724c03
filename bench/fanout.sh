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
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
kit=${BENCH_KIT:-$(cd "$root/../shared/bench" 2>/dev/null && pwd || true)}
[ -n "$kit" ] && [ -x "$kit/build.sh" ] || { echo "fanout: kit not found (set BENCH_KIT)" >&2; exit 1; }
export BENCH_BUILD=${BENCH_BUILD:-$here/out/build}
bash "$kit/build.sh" >&2
B=$BENCH_BUILD

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
COMMAND=""
for v in SHARDS CS N1 DUR ITEMS FANOUT_REV FANOUT_PYTHON; do
  if [ -n "${!v+x}" ]; then COMMAND+="$v=${!v@Q} "; fi
done
COMMAND+="bench/fanout.sh"

# --- the gateway's python: a snapshot of the tree, installed into our own venv
if [ -n "${FANOUT_PYTHON:-}" ]; then
  PY=$FANOUT_PYTHON
  snapshot="(FANOUT_PYTHON: $PY, not a snapshot)"
else
  src=$out/src
  mkdir -p "$src"
  if [ -n "${FANOUT_REV:-}" ]; then   # a commit, read with git archive (the tree is not touched)
    git -C "$root" archive "$FANOUT_REV" setup.py pyproject.toml README.md shardstream twisted | tar xf - -C "$src"
  else                               # the work tree as it is now, uncommitted edits included
    (cd "$root" && tar cf - --exclude=__pycache__ --exclude=dropin.cache \
       setup.py pyproject.toml README.md shardstream twisted) | tar xf - -C "$src"
  fi
  venv=$here/out/fanout-venv
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  # build in a copy (no build/ or egg-info in the tree); a local directory is
  # always reinstalled, its dependencies only when missing
  (cd "$src" && "$venv/bin/pip" install -q --disable-pip-version-check "$src" 2>&1 \
     | grep -v "^WARNING: Location" >&2 || true)
  PY=$venv/bin/python
  snapshot=$(cd "$src" && find shardstream twisted -name '*.py' | sort | xargs sha256sum | sha256sum | cut -c1-12)
  inst=$("$PY" -I -c 'import shardstream, os; print(os.path.dirname(shardstream.__file__))')
  got=$(cd "$inst/.." && find shardstream -name '*.py' | sort | xargs sha256sum | sha256sum | cut -c1-12)
  [ "$got" = "$(cd "$src" && find shardstream -name '*.py' | sort | xargs sha256sum | sha256sum | cut -c1-12)" ] \
    || { echo "fanout: installed shardstream differs from the snapshot" >&2; exit 1; }
fi
TWISTD=$(dirname "$PY")/twistd
[ -x "$TWISTD" ] || { echo "fanout: no twistd beside $PY" >&2; exit 1; }

# --- what this run was: commit (the tree may be dirty), machine
{
  printf '{"started":"%s","command":%s,' "$STARTED_AT" "$(python3 -c 'import json,sys;print(json.dumps(sys.argv[1]))' "$COMMAND")"
  printf '"commit":"%s","rev":"%s",' "$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    "$(if [ -n "${FANOUT_REV:-}" ]; then git -C "$root" rev-parse --short "$FANOUT_REV"; else echo worktree; fi)"
  printf '"dirty":%s,' "$(git -C "$root" status --short 2>/dev/null | python3 -c 'import json,sys;print(json.dumps(sys.stdin.read().splitlines()))')"
  printf '"snapshot":"%s","nproc":%s,' "$snapshot" "$(nproc)"
  printf '"cpu":%s,' "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //' | python3 -c 'import json,sys;print(json.dumps(sys.stdin.read().strip()))')"
  printf '"mem_gib":%s,' "$(awk '/MemTotal/ {printf "%.1f", $2/1048576}' /proc/meminfo)"
  printf '"kernel":"%s","go":"%s","python":"%s",' "$(uname -r)" "$(go version | cut -d' ' -f3)" "$("$PY" -c 'import platform;print(platform.python_version())')"
  printf '"loadavg_start":"%s","items_per_shard":%s,"key":"%s","n1":%s,"dur":"%s"}\n' \
    "$(cut -d' ' -f1-3 /proc/loadavg)" "$ITEMS" "$KEY" "$N1" "$DUR"
} >"$out/meta.json"

# --- process handling (as the kit's run-anchors.sh): own process group each
STARTED=()
stop_group() {
  local pg=$1 dog
  kill -TERM -- "-$pg" 2>/dev/null || { wait "$pg" 2>/dev/null || true; return 0; }
  ( for _ in $(seq 50); do sleep 0.1; kill -0 -- "-$pg" 2>/dev/null || exit 0; done
    kill -KILL -- "-$pg" 2>/dev/null ) &
  dog=$!
  wait "$pg" 2>/dev/null || true
  wait "$dog" 2>/dev/null || true
}
LOAD_PID=""
cleanup() {
  local pg
  set +e
  if [ -n "$LOAD_PID" ]; then kill "$LOAD_PID" 2>/dev/null; wait "$LOAD_PID" 2>/dev/null; fi
  for pg in "${STARTED[@]}"; do stop_group "$pg"; done
  STARTED=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM
start_bg() { # start_bg LOGFILE CMD... -> BG_PID (= its process group)
  local log=$1; shift
  setsid "$@" >"$log" 2>&1 &
  BG_PID=$!
  STARTED+=("$BG_PID")
}
stop_bg() {
  stop_group "$1"
  local keep=() pg
  for pg in "${STARTED[@]}"; do [ "$pg" = "$1" ] || keep+=("$pg"); done
  STARTED=("${keep[@]+"${keep[@]}"}")
}
alive() { [ -e "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { # wait_port PORT PID SECONDS
  local _
  for _ in $(seq $(($3 * 20))); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    alive "$2" || return 1
    sleep 0.05
  done
  return 1
}
cpu_ticks() { # utime+stime of PID (fields 14, 15 of /proc/PID/stat), in clock ticks
  sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
HZ=$(getconf CLK_TCK)
now_ms() { date +%s%3N; }

# --- one gateway process: GW_PID, GW_PORT, GW_START_MS; returns 1 if it did not listen
start_gateway() { # start_gateway GW VARIANT N TAG
  local gw=$1 variant=$2 n=$3 tag=$4 t0 conf
  GW_PORT=$(free_port)
  local log=$out/logs/$tag.log
  t0=$(now_ms)
  case $gw in
    gogw)
      SHARD_URLS=$SHARD_URLS PORT=$GW_PORT MERGE=concat SHARD_TIMEOUT=10 start_bg "$log" "$B/gogw" ;;
    shardstream)
      conf=$out/conf/$tag.toml
      if [ "$variant" = targeted ]; then
        python3 "$here/fanout/config.py" "$conf" "$GW_PORT" "$SHARD_URLS" \
          --target "v1=0" --target "v2=1" --target "v3=$((n / 2))" --target "v4=$((n - 1))"
      else
        python3 "$here/fanout/config.py" "$conf" "$GW_PORT" "$SHARD_URLS"
      fi
      # cwd = the run's directory, so nothing (twistd.pid, logs) lands in the tree;
      # bash execs twistd, so the group leader is the gateway itself
      start_bg "$log" bash -c 'cd "$1" && shift && exec "$@"' _ "$out" \
        "$TWISTD" -n --pidfile= shardstream --config "$conf" ;;
  esac
  GW_PID=$BG_PID
  if ! wait_port "$GW_PORT" "$GW_PID" 30; then
    if alive "$GW_PID"; then GW_RC="none: still running, not listening after 30 s"
    else GW_RC=0; wait "$GW_PID" 2>/dev/null || GW_RC=$?; fi
    stop_bg "$GW_PID"
    return 1
  fi
  GW_START_MS=$(( $(now_ms) - t0 ))
  return 0
}

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

note() { echo "fanout: $*" >&2; echo "$*" >>"$out/notes.txt"; }

TARGET_OK=""   # "", yes, or no:<reason>
for n in $SHARDS; do
  specs=()
  for k in $(seq 0 $((n - 1))); do specs+=(-shard "items=$ITEMS,delay=$((20 + 5 * (k % 8))),drip=0.2"); done
  start_bg "$out/logs/n$n-shardsim.log" "$B/shardsim" -base-port 0 -ports-file "$out/logs/n$n-ports" "${specs[@]}"
  SIM_PID=$BG_PID
  for _ in $(seq 100); do [ -s "$out/logs/n$n-ports" ] && break; sleep 0.05; done
  read -r -a ports <<<"$(sed -n 's/^READY //p' "$out/logs/n$n-ports" 2>/dev/null)"
  [ ${#ports[@]} -eq "$n" ] || { echo "fanout: shardsim did not come up with $n ports" >&2; exit 1; }
  urls=()
  for p in "${ports[@]}"; do urls+=("http://127.0.0.1:$p"); done
  SHARD_URLS=$(IFS=,; echo "${urls[*]}")
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
    if start_gateway shardstream targeted "$n" "n$n-probe-targeted"; then
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
      if start_gateway "$gw" scatter "$n" "n$n-c$c-$gw-scatter"; then
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
      if start_gateway shardstream targeted "$n" "n$n-c$c-shardstream-targeted"; then
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
