#!/usr/bin/env bash
# Start S1 shards (as run-anchors.sh does), redis, three gateways (a, b, c). Writes $AUTH_OUT/env.sh
set -euo pipefail
R=${AUTH_OUT:?}; B=${BENCH_BUILD:?}
PY=${PY:-python3}; export PYTHONPATH=${ROOT:?}
cd "$R"
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# --- S1 shards: exactly run-anchors.sh's S1 specs and flags
args=(); for k in 0 1 2 3 4 5 6 7; do args+=(-shard "items=200,delay=$((20 + 20 * k)),drip=0.25"); done
rm -f shardsim.ports
setsid "$B/shardsim" -base-port 0 -ports-file "$R/shardsim.ports" "${args[@]}" >shardsim.log 2>&1 < /dev/null &
echo "SIM_PID=$!" > env.sh
for _ in $(seq 100); do [ -s shardsim.ports ] && break; sleep 0.05; done
read -r -a ports <<<"$(sed -n 's/^READY //p' shardsim.ports)"
[ ${#ports[@]} -eq 8 ] || { echo "shardsim not up"; exit 1; }
# --- redis
RPORT=$(free_port)
setsid /usr/bin/redis-server --port "$RPORT" --bind 127.0.0.1 --save '' >redis.log 2>&1 < /dev/null &
echo "REDIS_PID=$! RPORT=$RPORT" >> env.sh
# --- key
rm -f keys.toml
$PY -m shardstream.daemon.keys_cli add --file keys.toml --partner bench --scope /items --rate 100000 --burst 100000 > keys-add.out
KEY=$(tail -1 keys-add.out); echo "KEY=$KEY" >> env.sh
# --- configs: as bench/gateway.sh (MERGE=concat), workers = 1, access log json
for cfg in a b c; do
  port=$(free_port)
  {
    echo '[server]'; echo "listen = \"tcp:$port:interface=127.0.0.1\""
    echo 'access_log = true'; echo 'log_format = "json"'; echo 'workers = 1'
    echo '[upstream]'; echo 'connect_timeout = 2.0'; echo 'first_byte_timeout = 10.0'; echo 'idle_timeout = 10.0'
    echo 'total_timeout = 30.0'; echo 'max_idle_connections = 512'
    i=0; for p in "${ports[@]}"; do echo "[shards.s$i]"; echo "urls = [\"http://127.0.0.1:$p\"]"; i=$((i+1)); done
    echo '[[routes]]'; echo 'path = "/items"'; echo 'mode = "scatter"'; echo 'items = "data.item"'; echo 'sort = ["starts_at"]'
    if [ $cfg != a ]; then echo '[auth]'; echo "keys_file = \"$R/keys.toml\""; fi
    if [ $cfg = b ]; then echo '[rate_limit]'; echo 'backend = "local"'; fi
    if [ $cfg = c ]; then echo '[rate_limit]'; echo 'backend = "redis"'; echo "redis_url = \"redis://127.0.0.1:$RPORT/0\""; fi
  } > gw-$cfg.toml
  setsid "$(dirname "$PY")/twistd" -n --pidfile= shardstream --config "$R/gw-$cfg.toml" > gw-$cfg.log 2>&1 < /dev/null &
  echo "GW_${cfg}_PID=$! GW_${cfg}_PORT=$port" >> env.sh
done
. ./env.sh
for cfg in a b c; do
  eval port=\$GW_${cfg}_PORT
  for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
done
cat env.sh
