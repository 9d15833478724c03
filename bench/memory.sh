#!/usr/bin/env bash
# Peak RSS of one gateway process as the shards' bodies double (S3-like:
# 4 shards, bodies sent at once, 4 clients). Uses the kit's shardsim and ttfb
# (run bench/run.sh once first, or the kit's build.sh with BENCH_BUILD set).
#   bench/memory.sh [ITEMS ...]        # default: 5000 10000 items per shard
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
B=${BENCH_BUILD:-$here/out/build}
[ -x "$B/shardsim" ] || { echo "memory: $B/shardsim missing: run bench/run.sh first" >&2; exit 1; }
for n in "${@:-5000 10000}"; do
  for n1 in $n; do
    ports=$(mktemp)
    "$B/shardsim" -base-port 0 -ports-file "$ports" -shard items=$n1 -shard items=$n1 \
      -shard items=$n1 -shard items=$n1 >/dev/null 2>&1 & sim=$!
    for _ in $(seq 50); do [ -s "$ports" ] && break; sleep 0.1; done
    urls=$(sed -n 's/^READY //p' "$ports" | tr ' ' '\n' | sed 's#^#http://127.0.0.1:#' | paste -sd,)
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    SHARD_URLS=$urls PORT=$port MERGE=concat SHARDSTREAM_WORKERS=1 setsid "$here/gateway.sh" >/dev/null 2>&1 & gw=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    echo "== $n1 items per shard ($((4 * n1)) per response)"
    "$B/ttfb" -url "http://127.0.0.1:$port/items" -c 4 -d 6s -warmup 4 -expect-items $((4 * n1)) -pid "$gw" \
      | grep -E "TTLB|peak RSS"
    kill -TERM -- "-$gw" 2>/dev/null || true; kill "$sim" 2>/dev/null || true; rm -f "$ports"; sleep 1
  done
done
