#!/usr/bin/env bash
# What partner authentication and a Redis rate limit add to time to first
# item: S1's shards (the kit's shardsim), one client (curl, which can send
# the Authorization header the kit's ttfb cannot), three gateways side by
# side: (a) no [auth], (b) [auth] with a local rate limit, (c) [auth] with a
# Redis rate limit; three rounds of a, b, c, 100 requests each after 10
# warm-ups. Figures: curl's time_starttransfer and the access log's
# first_item_seconds (p50, p99), and the differences to (a).
#   bench/auth.sh                  # ~12 min; results in bench/out/auth-<stamp>/
# Needs: the kit (../shared/bench, or BENCH_KIT), redis-server, curl.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
kit=${BENCH_KIT:-$(cd "$root/../shared/bench" 2>/dev/null && pwd || true)}
[ -n "$kit" ] || { echo "bench: kit not found (set BENCH_KIT)" >&2; exit 1; }
export BENCH_BUILD=${BENCH_BUILD:-$here/out/build}
bash "$kit/build.sh"
venv=$here/out/venv
if [ ! -x "$venv/bin/twistd" ]; then
  python3 -m venv "$venv" && "$venv/bin/pip" install -q "$root" && touch "$venv/.stamp"
fi
export AUTH_OUT=$here/out/auth-$(date -u +%Y%m%d-%H%M%S) ROOT=$root PY=$venv/bin/python
mkdir -p "$AUTH_OUT"
trap 'bash "$here/auth/cleanup.sh" || true' EXIT
bash "$here/auth/setup.sh"
bash "$here/auth/run.sh"
bash "$here/auth/direct-fast.sh" || true
"$PY" "$here/auth/analyze.py" | tee "$AUTH_OUT/summary.txt"
"$PY" "$here/auth/bootstrap.py" | tee -a "$AUTH_OUT/summary.txt"
