# Shell pieces shared by bench/fanout.sh and bench/scaling.sh; sourced, not run.
#
# The caller sets BENCH_NAME (the prefix of its messages) and sources this file (-> `here`,
# bench/, and `root`, the project), then calls kit_build (-> kit, B), makes its run directory
# `out` (with logs/ and conf/ in it) and calls snapshot_python (-> PY, TWISTD, snapshot)
# before starting anything. Sourcing installs the EXIT/INT/TERM traps that stop every
# process group start_bg started.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")

kit_build() { # the kit's Go tools, built into BENCH_BUILD (default bench/out/build, as bench/run.sh)
  kit=${BENCH_KIT:-$(cd "$root/../shared/bench" 2>/dev/null && pwd || true)}
  [ -n "$kit" ] && [ -x "$kit/build.sh" ] || { echo "$BENCH_NAME: kit not found (set BENCH_KIT)" >&2; exit 1; }
  export BENCH_BUILD=${BENCH_BUILD:-$here/out/build}
  bash "$kit/build.sh" >&2
  B=$BENCH_BUILD
}

command_of() { # command_of SCRIPT VAR... -> COMMAND: the script with the knobs that were set
  local script=$1 v; shift
  COMMAND=""
  for v in "$@"; do
    if [ -n "${!v+x}" ]; then COMMAND+="$v=${!v@Q} "; fi
  done
  COMMAND+=$script
}

# --- the gateway's python: a snapshot of the tree, installed into our own venv
snapshot_python() { # snapshot_python VENV REV PYTHON -> PY, TWISTD, snapshot
  # PYTHON given: that interpreter, as it is. Else a copy of the tree (REV: that commit, taken
  # with git archive; empty: the work tree as it is now) is installed into VENV, so that edits
  # made during the run do not leak into it.
  local venv=$1 rev=$2 src inst got
  if [ -n "$3" ]; then
    PY=$3
    snapshot="(${BENCH_NAME^^}_PYTHON: $PY, not a snapshot)"
  else
    src=$out/src
    mkdir -p "$src"
    if [ -n "$rev" ]; then   # a commit, read with git archive (the tree is not touched)
      git -C "$root" archive "$rev" setup.py pyproject.toml README.md shardstream twisted | tar xf - -C "$src"
    else                     # the work tree as it is now, uncommitted edits included
      (cd "$root" && tar cf - --exclude=__pycache__ --exclude=dropin.cache \
         setup.py pyproject.toml README.md shardstream twisted) | tar xf - -C "$src"
    fi
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
      || { echo "$BENCH_NAME: installed shardstream differs from the snapshot" >&2; exit 1; }
  fi
  TWISTD=$(dirname "$PY")/twistd
  [ -x "$TWISTD" ] || { echo "$BENCH_NAME: no twistd beside $PY" >&2; exit 1; }
}

# --- what this run was: commit (the tree may be dirty), machine
write_meta() { # write_meta FILE STARTED REV EXTRA: one JSON object; EXTRA = more '"key":value' pairs
  local rev=$3
  {
    printf '{"started":"%s","command":%s,' "$2" "$(python3 -c 'import json,sys;print(json.dumps(sys.argv[1]))' "$COMMAND")"
    printf '"commit":"%s","rev":"%s",' "$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
      "$(if [ -n "$rev" ]; then git -C "$root" rev-parse --short "$rev"; else echo worktree; fi)"
    printf '"dirty":%s,' "$(git -C "$root" status --short 2>/dev/null | python3 -c 'import json,sys;print(json.dumps(sys.stdin.read().splitlines()))')"
    printf '"snapshot":"%s","nproc":%s,' "$snapshot" "$(nproc)"
    printf '"cpu":%s,' "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //' | python3 -c 'import json,sys;print(json.dumps(sys.stdin.read().strip()))')"
    printf '"mem_gib":%s,' "$(awk '/MemTotal/ {printf "%.1f", $2/1048576}' /proc/meminfo)"
    printf '"kernel":"%s","go":"%s","python":"%s",' "$(uname -r)" "$(go version | cut -d' ' -f3)" "$("$PY" -c 'import platform;print(platform.python_version())')"
    printf '"loadavg_start":"%s",%s}\n' "$(cut -d' ' -f1-3 /proc/loadavg)" "$4"
  } >"$1"
}

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
note() { echo "$BENCH_NAME: $*" >&2; echo "$*" >>"$out/notes.txt"; }

# --- the shards: one shardsim process serving N ports
start_shards() { # start_shards TAG N ITEMS [DRIP] -> SIM_PID, urls (array), SHARD_URLS
  # shard k: ITEMS items, first byte after 20 + 5*(k mod 8) ms, one item every DRIP ms (0.2)
  local tag=$1 n=$2 items=$3 drip=${4:-0.2} k p specs=() ports=()
  for k in $(seq 0 $((n - 1))); do specs+=(-shard "items=$items,delay=$((20 + 5 * (k % 8))),drip=$drip"); done
  start_bg "$out/logs/$tag-shardsim.log" "$B/shardsim" -base-port 0 -ports-file "$out/logs/$tag-ports" "${specs[@]}"
  SIM_PID=$BG_PID
  for _ in $(seq 100); do [ -s "$out/logs/$tag-ports" ] && break; sleep 0.05; done
  read -r -a ports <<<"$(sed -n 's/^READY //p' "$out/logs/$tag-ports" 2>/dev/null)"
  [ ${#ports[@]} -eq "$n" ] || { echo "$BENCH_NAME: shardsim did not come up with $n ports" >&2; exit 1; }
  urls=()
  for p in "${ports[@]}"; do urls+=("http://127.0.0.1:$p"); done
  SHARD_URLS=$(IFS=,; echo "${urls[*]}")
}

# --- one gateway process: GW_PID, GW_PORT, GW_START_MS; returns 1 if it did not listen (GW_RC)
start_gateway() { # start_gateway GW TAG [ARG...]: gogw, or shardstream (ARGs go to fanout/config.py)
  local gw=$1 tag=$2 t0 conf
  shift 2
  GW_PORT=$(free_port)
  local log=$out/logs/$tag.log
  t0=$(now_ms)
  case $gw in
    gogw)
      SHARD_URLS=$SHARD_URLS PORT=$GW_PORT MERGE=concat SHARD_TIMEOUT=10 start_bg "$log" "$B/gogw" ;;
    shardstream)
      conf=$out/conf/$tag.toml
      python3 "$here/fanout/config.py" "$conf" "$GW_PORT" "$SHARD_URLS" "$@"
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
