#!/usr/bin/env bash
# Stop exactly the processes setup.sh started (by PID).
. "${AUTH_OUT:?}/env.sh"
for p in $GW_a_PID $GW_b_PID $GW_c_PID $REDIS_PID $SIM_PID; do kill -TERM "$p" 2>/dev/null; done
sleep 3
for p in $GW_a_PID $GW_b_PID $GW_c_PID $REDIS_PID $SIM_PID; do kill -0 "$p" 2>/dev/null && { echo "still alive: $p, KILL"; kill -KILL "$p"; }; done
true
