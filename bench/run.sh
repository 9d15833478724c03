#!/usr/bin/env bash
# Benchmarks shardstream beside the kit's anchors (gogw, flaskgw) and floors
# (direct, direct-fast), in one run of the kit's runner, then computes the
# issue's target ratios.
#
#   bench/run.sh                     # S1 S2 S3 S4, ~5 min
#   QUICK=1 bench/run.sh             # smoke run, ~1.5 min
#   SCENARIOS=S2 bench/run.sh        # any of the kit's knobs pass through
#   bench/run.sh strict              # issue 14: S1 concat, partial vs strict mode, ~2 min
#   bench/run.sh parts               # issue 15: each speed change alone, S1 S2 S3, ~6 min
#
# Gateway "shardstream" is the default (partial) mode, "shardstream-strict" the same gateway
# with `partial = false` on the route (strict mode; see gateway.sh). The preset `strict` only
# changes the defaults: SCENARIOS=S1, S1_MERGES=concat (a sorted merge waits for every shard's
# head anyway) and GATEWAYS with both. SHARDSTREAM_PYTHON=/path/to/python uses that
# interpreter's shardstream (e.g. a dev venv) instead of installing bench/out/venv.
#
# Needs ../shared/bench (the kit; read-only is fine). Installs what it needs:
# Go (apt, through the kit's build.sh) and a venv with shardstream in
# bench/out/venv. Results: bench/out/<stamp>/results.{md,json} (the kit's
# tables) and targets.{md,json} (ratios), plus bench/out/latest.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
kit=${BENCH_KIT:-$(cd "$root/../shared/bench" 2>/dev/null && pwd || true)}
[ -n "$kit" ] && [ -x "$kit/run-anchors.sh" ] || { echo "bench: kit not found (set BENCH_KIT)" >&2; exit 1; }

export BENCH_BUILD=${BENCH_BUILD:-$here/out/build}
bash "$kit/build.sh"

if [ "${1:-}" = parts ]; then
  # shardstream as shipped, and with one part put back as it was: items decoded by ijson
  # (server.item_parser = "python") or the shards' GETs on Twisted's client
  # (upstream.client = "twisted").
  export SCENARIOS=${SCENARIOS:-"S1 S2 S3"}
  export GATEWAYS=${GATEWAYS:-"gogw flaskgw shardstream shardstream-ijson shardstream-twisted"}
  export SHARDSTREAM_IJSON_CMD=${SHARDSTREAM_IJSON_CMD:-"SHARDSTREAM_ITEM_PARSER=python exec $here/gateway.sh"}
  export SHARDSTREAM_TWISTED_CMD=${SHARDSTREAM_TWISTED_CMD:-"SHARDSTREAM_CLIENT=twisted exec $here/gateway.sh"}
fi
if [ "${1:-}" = strict ]; then
  export SCENARIOS=${SCENARIOS:-S1} S1_MERGES=${S1_MERGES:-concat}
  export GATEWAYS=${GATEWAYS:-"direct direct-fast gogw flaskgw shardstream shardstream-strict"}
fi

venv=$here/out/venv
py=${SHARDSTREAM_PYTHON:-$venv/bin/python}
if [ -n "${SHARDSTREAM_PYTHON:-}" ]; then :
elif [ ! -x "$venv/bin/twistd" ] || [ "$root/setup.py" -nt "$venv/.stamp" ] || \
   [ -n "$(find "$root/shardstream" -newer "$venv/.stamp" -name '*.py' 2>/dev/null | head -1)" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "$root"
  touch "$venv/.stamp"
fi

stamp=$(date -u +%Y%m%d-%H%M%S)
out=$here/out/$stamp
mkdir -p "$out"
ln -sfn "$stamp" "$here/out/latest"
export SCENARIOS=${SCENARIOS:-"S1 S2 S3 S4"}
export GATEWAYS=${GATEWAYS:-"direct direct-fast gogw flaskgw shardstream"}
export SHARDSTREAM_CMD=${SHARDSTREAM_CMD:-"exec $here/gateway.sh"}
export SHARDSTREAM_STRICT_CMD=${SHARDSTREAM_STRICT_CMD:-"SHARDSTREAM_PARTIAL=false exec $here/gateway.sh"}
export OUT=$out
"$kit/run-anchors.sh"
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null)" ] || commit+=" + uncommitted changes"
"$py" "$here/targets.py" "$out" --commit "$commit"
