"""Markdown tables of one bench/fanout.sh run (stdlib only).

    report.py OUT_DIR   # reads OUT_DIR/meta.json, runs/*.json, notes.txt; prints markdown
"""
import glob
import json
import os
import sys

out = sys.argv[1]
meta = json.load(open(os.path.join(out, "meta.json")))
rows = []
for f in sorted(glob.glob(os.path.join(out, "runs", "*.json"))):
    r = json.load(open(f))
    t = r.get("tags") or {}
    if not t:
        continue
    rows.append(r)


def key(r):
    t = r["tags"]
    order = {"gogw": 0, "shardstream": 1, "direct": 2}
    return int(t["n"]), int(r["c"]), order.get(t["gateway"], 9), t["variant"]


rows.sort(key=key)
by = {(int(r["tags"]["n"]), int(r["c"]), r["tags"]["gateway"], r["tags"]["variant"]): r for r in rows}
ns = sorted({k[0] for k in by})
cs = sorted({k[1] for k in by})


def d(r, name, q="p50"):
    v = (r.get(name) or {}).get(q) if r else None
    return v if isinstance(v, (int, float)) else None


def proc(r, name):
    v = (r.get("gateway_proc") or {}).get(name) if r else None
    return v if isinstance(v, (int, float)) and v else None


def fo(r, name):
    v = (r.get("fanout") or {}).get(name) if r else None
    return v if isinstance(v, (int, float)) else None


def f1(v, unit=""):
    return "-" if v is None else f"{v:.1f}{unit}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}x"


def shards_asked(r):
    p = (r.get("fanout") or {}).get("probe") or {}
    s = p.get("shards") or {}
    return s.get("total", "-") if s else "-"


lines = []
w = lines.append
w(f"Run started {meta['started']}; command: `{meta['command']}`.")
dirty = meta.get("dirty") or []
tree = (f" dirty ({len(dirty)} paths changed or new: " + ", ".join(x.split()[-1] for x in dirty) + ")"
        if dirty else " (clean tree)")
if meta.get("rev", "worktree") == "worktree":
    w(f"HEAD {meta['commit']}{tree}; the gateway was installed from a copy of the work tree as it was "
      f"(sources digest {meta['snapshot']}).")
else:
    w(f"Gateway installed from commit {meta['rev']} (git archive; sources digest {meta['snapshot']}); "
      f"HEAD {meta['commit']}, work tree{tree} not used.")
w(f"Machine: {meta['nproc']} cores ({meta['cpu']}), {meta['mem_gib']} GiB, kernel {meta['kernel']}; "
  f"{meta['go']}; Python {meta['python']}; load average {meta['loadavg_start']} at the start, "
  f"{' '.join(meta.get('loadavg_end') or [])} at the end.")
w(f"Shards: {meta['items_per_shard']} items each (~600 B per item), first byte after 20 + 5*(k mod 8) ms, "
  "0.2 ms per item after that; one shardsim process serves all N ports. "
  f"c=1: {meta['n1']} requests after 3 warm-ups; c>1: {meta['dur']} after c warm-ups. "
  "Every row has its own fresh gateway process.")
w("")
w("### All rows")
w("")
w("Times in ms (p50/p99 of the measured requests). CPU ms/req: ttfb's utime+stime of the gateway "
  "over the measured phase ÷ successful answers; \"whole\": our own /proc/PID/stat before/after the "
  "whole load run (warm-ups included) ÷ all answers. RSS in MB: idle = VmRSS after start-up and one "
  "probe request, peak = VmHWM at the end (the process's high-water mark), after = VmRSS at the end. "
  "start = ms from exec to listening. shards = meta.shards.total of a probe request.")
w("")
w("| N | c | gateway | list | TTFI p50 | TTFI p99 | TTLB p50 | TTLB p99 | req/s | CPU ms/req | CPU ms/req whole "
  "| RSS idle | RSS peak | RSS after | start ms | shards | errors |")
w("|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    t = r["tags"]
    w(f"| {t['n']} | {r['c']} | {t['gateway']} | {t['variant']} | {f1(d(r, 'ttfi_ms'))} | {f1(d(r, 'ttfi_ms', 'p99'))} "
      f"| {f1(d(r, 'ttlb_ms'))} | {f1(d(r, 'ttlb_ms', 'p99'))} | {f1(r.get('rps'))} "
      f"| {f1(proc(r, 'cpu_ms_per_req'))} | {f1(fo(r, 'cpu_ms_per_req_whole'))} "
      f"| {f1(fo(r, 'rss_idle_mb'))} | {f1(fo(r, 'hwm_mb'))} | {f1(fo(r, 'rss_after_mb'))} "
      f"| {fo(r, 'start_ms') if fo(r, 'start_ms') is not None else '-'} "
      f"| {shards_asked(r) if t['gateway'] != 'direct' else '-'} | {r.get('errors', '-')} |")
w("")
w("### shardstream ÷ gogw (full scatter, same N and c, same run)")
w("")
w("| N | c | TTFI p50 | TTFI p99 | TTLB p50 | TTLB p99 | req/s | CPU ms/req | RSS peak | shardstream CPU ms/req ÷ N | gogw CPU ms/req ÷ N |")
w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for n in ns:
    for c in cs:
        s, g = by.get((n, c, "shardstream", "scatter")), by.get((n, c, "gogw", "scatter"))
        if not s or not g:
            continue
        sc, gc = proc(s, "cpu_ms_per_req"), proc(g, "cpu_ms_per_req")
        w(f"| {n} | {c} | {ratio(d(s, 'ttfi_ms'), d(g, 'ttfi_ms'))} | {ratio(d(s, 'ttfi_ms', 'p99'), d(g, 'ttfi_ms', 'p99'))} "
          f"| {ratio(d(s, 'ttlb_ms'), d(g, 'ttlb_ms'))} | {ratio(d(s, 'ttlb_ms', 'p99'), d(g, 'ttlb_ms', 'p99'))} "
          f"| {ratio(s.get('rps'), g.get('rps'))} | {ratio(sc, gc)} | {ratio(fo(s, 'hwm_mb'), fo(g, 'hwm_mb'))} "
          f"| {'-' if sc is None else f'{sc / n:.2f}'} | {'-' if gc is None else f'{gc / n:.2f}'} |")
w("")
w("### Targeted list (?vendor_id=" + meta["key"] + ", owned by s0) against the full scatter")
w("")
tgt = meta.get("target", "untested")
if tgt != "yes":
    w(f"Skipped: {tgt.removeprefix('no:')}")
else:
    w("| N | c | targeted TTFI p50 | TTLB p50 | req/s | CPU ms/req | ÷ shardstream scatter: TTFI p50 | TTLB p50 | req/s | CPU ms/req "
      "| ÷ gogw scatter: TTFI p50 | CPU ms/req | direct s0 TTFI p50 | TTLB p50 |")
    w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in ns:
        for c in cs:
            t_, s, g, x = (by.get((n, c, "shardstream", "targeted")), by.get((n, c, "shardstream", "scatter")),
                           by.get((n, c, "gogw", "scatter")), by.get((n, c, "direct", "s0")))
            if not t_:
                continue
            tc = proc(t_, "cpu_ms_per_req")
            w(f"| {n} | {c} | {f1(d(t_, 'ttfi_ms'))} | {f1(d(t_, 'ttlb_ms'))} | {f1(t_.get('rps'))} | {f1(tc)} "
              f"| {ratio(d(t_, 'ttfi_ms'), d(s, 'ttfi_ms'))} | {ratio(d(t_, 'ttlb_ms'), d(s, 'ttlb_ms'))} "
              f"| {ratio(t_.get('rps'), s.get('rps') if s else None)} | {ratio(tc, proc(s, 'cpu_ms_per_req'))} "
              f"| {ratio(d(t_, 'ttfi_ms'), d(g, 'ttfi_ms'))} | {ratio(tc, proc(g, 'cpu_ms_per_req'))} "
              f"| {f1(d(x, 'ttfi_ms'))} | {f1(d(x, 'ttlb_ms'))} |")
w("")
vf = os.path.join(out, "shardsim-vendor-filter.json")
if os.path.exists(vf):
    v = json.load(open(vf))
    counts = ", ".join(f"{k}: {x.get('items')} items" for k, x in v.items())
    same = len({x.get("items") for x in v.values()}) == 1
    w(f"shardsim and vendor_id (s0 asked directly): {counts} — "
      + ("it ignores the parameter (no filtering)." if same else "the counts differ: it filters."))
notes = os.path.join(out, "notes.txt")
if os.path.exists(notes):
    w("")
    w("Notes from the run:")
    w("")
    for line in open(notes):
        w(f"- {line.strip()}")
errs = [r for r in rows if r.get("errors")]
for r in errs:
    t = r["tags"]
    w(f"- errors N={t['n']} c={r['c']} {t['gateway']} {t['variant']}: {r.get('error_kinds')}")
print("\n".join(lines))
