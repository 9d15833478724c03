"""Join curl.tsv with the gateways' JSON access logs (by request_id); p50/p99 nearest-rank."""
import csv, json, math
import os
R = os.environ["AUTH_OUT"]
def pct(xs, p):
    xs = sorted(xs); return xs[max(1, math.ceil(p / 100 * len(xs))) - 1]
log = {}
for cfg in "abc":
    for line in open(f"{R}/gw-{cfg}.log"):
        try: e = json.loads(line)
        except ValueError: continue
        if e.get("event") == "access": log[e["request_id"]] = e
rows = list(csv.DictReader(open(f"{R}/curl.tsv"), delimiter="\t"))
cpu = list(csv.DictReader(open(f"{R}/cpu.tsv"), delimiter="\t"))
bad, joined = [], []
for r in rows:
    e = log.get(r["request_id"])
    ok = (r["code"] == "200" and e is not None and e["status"] == 200 and e["items"] == 1600
          and e["outcome"] == "completed" and (r["cfg"] == "a") != bool(r["ratelimit"])
          and (r["cfg"] == "a") == (e["partner"] is None))
    if not ok: bad.append(r)
    if r["phase"] == "meas": joined.append((r, e))
out = {"checks": {"requests": len(rows), "failed_checks": len(bad),
                  "connects_in_measured": sum(int(r["num_connects"]) for r, _ in joined),
                  "bytes": sorted({r["bytes"] for r in rows})}}
print(f"checks: {len(rows)} requests (warm+measured), {len(bad)} failing (200 + 1600 items in log + RateLimit header iff auth + partner in log); "
      f"new connections during measured phases: {out['checks']['connects_in_measured']}; body sizes {out['checks']['bytes']}")
def stats(sel):
    c = [float(r["ttfb_s"]) * 1e3 for r, e in sel]; l = [e["first_item_seconds"] * 1e3 for r, e in sel]
    t = [float(r["total_s"]) * 1e3 for r, e in sel]
    return dict(n=len(sel), curl_p50=pct(c, 50), curl_p99=pct(c, 99), log_p50=pct(l, 50), log_p99=pct(l, 99),
                total_p50=pct(t, 50), curl_minus_log_p50=pct([a - b for a, b in zip(c, l)], 50))
res = {}
hdr = f"{'round':>5} {'cfg':>3} {'n':>4} | {'curl p50':>8} {'curl p99':>8} | {'log p50':>8} {'log p99':>8} | {'TTLB p50':>8} | {'CPU ms/req':>10} {'redis ms/req':>12}"
print("times in ms; curl = time_starttransfer, log = first_item_seconds, TTLB = curl time_total")
print(hdr)
ROUNDS = [str(i) for i in range(1, int(os.environ.get("ROUNDS", "3")) + 1)] + ["all"]
for rnd in ROUNDS:
    for cfg in "abc":
        sel = [(r, e) for r, e in joined if r["cfg"] == cfg and (rnd == "all" or r["round"] == rnd)]
        s = stats(sel)
        cs = [c for c in cpu if c["cfg"] == cfg and (rnd == "all" or c["round"] == rnd)]
        n = sum(int(c["n"]) for c in cs)
        s["cpu_ms_per_req"] = 10 * sum(int(c["gw_ticks_after"]) - int(c["gw_ticks_before"]) for c in cs) / n
        s["redis_cpu_ms_per_req"] = 10 * sum(int(c["redis_ticks_after"]) - int(c["redis_ticks_before"]) for c in cs) / n
        res[f"{rnd}/{cfg}"] = s
        print(f"{rnd:>5} {cfg:>3} {s['n']:>4} | {s['curl_p50']:8.2f} {s['curl_p99']:8.2f} | {s['log_p50']:8.2f} {s['log_p99']:8.2f} | "
              f"{s['total_p50']:8.2f} | {s['cpu_ms_per_req']:10.1f} {s['redis_cpu_ms_per_req']:12.2f}")
print("\ndifferences at p50 (ms):")
for rnd in ROUNDS:
    a, b, c = (res[f"{rnd}/{x}"] for x in "abc")
    d = {k: {"b-a": b[k] - a[k], "c-a": c[k] - a[k]} for k in ("curl_p50", "log_p50", "curl_p99", "log_p99", "cpu_ms_per_req")}
    res[f"{rnd}/diff"] = d
    print(f"  round {rnd:>3}: curl b-a {d['curl_p50']['b-a']:+6.2f}  c-a {d['curl_p50']['c-a']:+6.2f} | "
          f"log b-a {d['log_p50']['b-a']:+6.2f}  c-a {d['log_p50']['c-a']:+6.2f} | p99 curl b-a {d['curl_p99']['b-a']:+6.2f} c-a {d['curl_p99']['c-a']:+6.2f}"
          f" | CPU b-a {d['cpu_ms_per_req']['b-a']:+5.1f} c-a {d['cpu_ms_per_req']['c-a']:+5.1f}")
out["results"] = res
json.dump(out, open(f"{R}/summary.json", "w"), indent=1)
with open(f"{R}/joined.tsv", "w") as f:
    f.write("round\tcfg\tcode\tcurl_ttfb_ms\tcurl_total_ms\tlog_first_item_ms\tlog_duration_ms\titems\trequest_id\n")
    for r, e in joined:
        f.write(f"{r['round']}\t{r['cfg']}\t{r['code']}\t{float(r['ttfb_s'])*1e3:.3f}\t{float(r['total_s'])*1e3:.3f}\t"
                f"{e['first_item_seconds']*1e3:.3f}\t{e['duration_seconds']*1e3:.3f}\t{e['items']}\t{r['request_id']}\n")
