#!/usr/bin/env bash
# Floor: time_starttransfer straight to shard 0 (delay 20 ms), 10 warm-up + 100, one keep-alive curl.
set -euo pipefail
cd "${AUTH_OUT:?}"; p=$(awk '/^READY/{print $2}' shardsim.ports)
a=(); for i in $(seq 110); do a+=(-o /dev/null "http://127.0.0.1:$p/items"); done
curl -s -w '%{http_code}\t%{time_starttransfer}\t%{time_total}\n' "${a[@]}" | tail -n 100 > direct-fast.tsv
python3 -c "
import math; xs=sorted(float(l.split()[1])*1e3 for l in open('direct-fast.tsv')); p=lambda q: xs[max(1,math.ceil(q/100*len(xs)))-1]
print(f'direct-fast (shard 0 alone) n={len(xs)} ttfb p50 {p(50):.2f} ms  p99 {p(99):.2f} ms')"
