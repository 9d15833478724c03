#!/usr/bin/env bash
# 3 rounds x (a, b, c): 10 warm-up + 100 measured requests per block, c=1, one curl
# process per phase (keep-alive connection reused across its URLs).
# Raw: $AUTH_OUT/curl.tsv, cpu.tsv
set -euo pipefail
R=${AUTH_OUT:?}; cd "$R"; . ./env.sh
ROUNDS=${ROUNDS:-3} WARM=${WARM:-10} N=${N:-100}
ticks() { awk '{print $14+$15}' /proc/$1/stat; }   # utime+stime, clock ticks (USER_HZ=100)
W='%{http_code}\t%{time_starttransfer}\t%{time_total}\t%{size_download}\t%{num_connects}\t%header{x-request-id}\t%header{ratelimit}\n'
reqs() { # reqs PORT COUNT AUTH?
  local a=() i; [ "$3" = 1 ] && a=(-H "Authorization: Bearer $KEY")
  for i in $(seq "$2"); do a+=(-o /dev/null "http://127.0.0.1:$1/items"); done
  curl -s -w "$W" "${a[@]}"
}
echo -e "round\tcfg\tphase\tcode\tttfb_s\ttotal_s\tbytes\tnum_connects\trequest_id\tratelimit" > curl.tsv
echo -e "round\tcfg\tgw_ticks_before\tgw_ticks_after\tredis_ticks_before\tredis_ticks_after\twall_s\tn" > cpu.tsv
for r in $(seq "$ROUNDS"); do
  for cfg in a b c; do
    eval port=\$GW_${cfg}_PORT pid=\$GW_${cfg}_PID
    auth=1; [ $cfg = a ] && auth=0
    reqs "$port" "$WARM" $auth | sed "s/^/$r\t$cfg\twarm\t/" >> curl.tsv
    sleep 0.3
    g0=$(ticks $pid); r0=$(ticks $REDIS_PID); t0=$(date +%s.%N)
    reqs "$port" "$N" $auth | sed "s/^/$r\t$cfg\tmeas\t/" >> curl.tsv
    t1=$(date +%s.%N); g1=$(ticks $pid); r1=$(ticks $REDIS_PID)
    echo -e "$r\t$cfg\t$g0\t$g1\t$r0\t$r1\t$(echo "$t1 - $t0" | bc)\t$N" >> cpu.tsv
    echo "round $r cfg $cfg done: gw ticks $((g1-g0))" >&2
    sleep 0.3
  done
done
