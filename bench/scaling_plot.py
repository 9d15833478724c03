"""Tables and plot of one bench/scaling.sh run.

    scaling_plot.py OUT_DIR             # OUT_DIR/results.md and OUT_DIR/scaling.png (matplotlib)
    scaling_plot.py --no-plot OUT_DIR   # results.md only (stdlib)
    scaling_plot.py --line RUN.json     # one summary line of one row (stdlib)

Reads OUT_DIR/meta.json, runs/*.json (ttfb's JSON; the row is in its tags: sweep, n, items,
gateway) and notes.txt.
"""
import glob
import json
import os
import sys

GATEWAYS = ("gogw", "shardstream")
SWEEPS = {  # sweep -> (title, x label, x of a run)
    "shards": ("Shards grow, same total items", "shards", lambda r: int(r["tags"]["n"])),
    "items": ("Lists grow", "items per shard", lambda r: int(r["tags"]["items"])),
    "clients": ("Clients grow", "concurrent clients", lambda r: int(r["c"])),
}


def val(r, *path):
    """A number at path in a run (None when missing, zero CPU included: 10 ms ticks)."""
    for k in path:
        r = r.get(k) if isinstance(r, dict) else None
    return r if isinstance(r, (int, float)) and not isinstance(r, bool) else None


def metrics(r):
    items = int(r["tags"]["n"]) * int(r["tags"]["items"])
    cpu = val(r, "gateway_proc", "cpu_ms_per_req") or None
    return {
        "ttfi": val(r, "ttfi_ms", "p50"),
        "ttlb": val(r, "ttlb_ms", "p50"),
        "rps": val(r, "rps") or None,
        "cpu": cpu,
        "cpu_item": None if cpu is None else 1000 * cpu / items,
        "rss": val(r, "gateway_proc", "peak_rss_mb"),
    }


def line(path):
    r = json.load(open(path))
    t, m = r.get("tags") or {}, metrics(r)
    fmt = lambda v, spec: "-" if v is None else format(v, spec)
    print(f"  {t.get('sweep', '?'):<7} N={t.get('n'):<3} items={t.get('items'):<6} c={r.get('c'):<4} "
          f"{t.get('gateway'):<12} TTFI {fmt(m['ttfi'], '8.1f')}  TTLB {fmt(m['ttlb'], '8.1f')} ms  "
          f"{fmt(m['rps'], '7.1f')} req/s ({r.get('ok')} ok, {r.get('errors')} err)  "
          f"CPU {fmt(m['cpu'], '.1f')} ms/req  peak RSS {fmt(m['rss'], '.0f')} MB")


def load(out):
    rows = {}  # sweep -> x -> gateway -> run
    for f in sorted(glob.glob(os.path.join(out, "runs", "*.json"))):
        try:
            r = json.load(open(f))
        except ValueError:
            continue
        t = r.get("tags") or {}
        if t.get("sweep") in SWEEPS and t.get("gateway") in GATEWAYS:
            x = SWEEPS[t["sweep"]][2](r)
            rows.setdefault(t["sweep"], {}).setdefault(x, {})[t["gateway"]] = r
    return rows


def num(v, digits=1):
    return "-" if v is None else f"{v:,.{digits}f}"


def times(a, b):
    return "-" if a is None or not b else f"{a / b:.2f}x" if a / b >= 0.1 else f"{a / b:.3f}x"


def report(out, rows, plotted):
    meta = json.load(open(os.path.join(out, "meta.json")))
    dirty = meta.get("dirty") or []
    src = (f"the work tree as it was ({len(dirty)} uncommitted paths)" if meta.get("rev") == "worktree"
           else f"commit {meta.get('rev')} (git archive)")
    md = [
        f"Run started {meta['started']}: `{meta['command']}`.",
        f"shardstream installed from {src} on HEAD {meta['commit']}, sources digest {meta['snapshot']}; "
        f"one process (workers = 1). Anchor: the kit's gogw (Go, buffering).",
        f"{meta['nproc']} cores ({meta['cpu']}), {meta['mem_gib']} GiB, kernel {meta['kernel']}, {meta['go']}, "
        f"Python {meta['python']}; load average {meta['loadavg_start']} at the start, "
        f"{' '.join(meta.get('loadavg_end') or ['?'])} at the end (shardsim and the client share the machine).",
        "",
        f"Shards: shard k sends its first byte after 20 + 5*(k mod 8) ms, then one item (~600 B) every "
        f"{meta['drip']} ms. Each gateway is started fresh for each row; the load is the same for both. "
        "Times are p50 in ms as the kit's ttfb sees them; CPU is utime+stime of the gateway's process "
        "tree over the measured phase ÷ successful answers (10 ms ticks), per item = that ÷ items in one "
        "answer; peak RSS is the highest sampled VmRSS of the tree (MB, warm-ups included). "
        "÷ gogw: shardstream's figure over gogw's in the same row (TTFI, TTLB, CPU, RSS: lower is "
        "better for shardstream below 1; req/s: higher).",
    ]
    if plotted:
        md += ["", "![CPU ms per request and TTLB p50 as shards, lists and clients grow](scaling.png)"]
    for sweep, (title, _, _) in SWEEPS.items():
        if sweep not in rows:
            continue
        runs = [r for x in sorted(rows[sweep]) for r in rows[sweep][x].values()]
        cs = sorted({r["c"] for r in runs})
        loads = ", ".join(dict.fromkeys(r["tags"].get("load", "?") for r in runs))
        md += ["", f"### {title} (c={cs[0] if len(cs) == 1 else 'per row'}; ttfb {loads} after max(c, 3) warm-ups)", ""]
        md.append("| N | items/shard | c | answer MB | gateway | TTFI | TTLB | req/s | CPU ms/req | CPU µs/item "
                  "| peak RSS | requests | errors | ÷ gogw: TTFI | TTLB | req/s | CPU | RSS |")
        md.append("|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for x in sorted(rows[sweep]):
            g = metrics(rows[sweep][x]["gogw"]) if "gogw" in rows[sweep][x] else {}
            for gw in GATEWAYS:
                r = rows[sweep][x].get(gw)
                if r is None:
                    continue
                m, t = metrics(r), r["tags"]
                rel = (" | " + " | ".join(times(m[k], g.get(k)) for k in ("ttfi", "ttlb", "rps", "cpu", "rss"))
                       if gw != "gogw" and g else " | | | | |")
                md.append(f"| {t['n']} | {t['items']} | {r['c']} | {num((r.get('bytes_per_resp') or 0) / 1e6)} "
                          f"| {gw} | {num(m['ttfi'])} | {num(m['ttlb'])} | {num(m['rps'])} | {num(m['cpu'])} "
                          f"| {num(m['cpu_item'], 2)} | {num(m['rss'], 0)} | {r.get('ok')} | {r.get('errors')}{rel} |")
    notes = os.path.join(out, "notes.txt")
    bad = [r for s in rows.values() for x in s.values() for r in x.values() if r.get("errors")]
    if os.path.exists(notes) or bad:
        md += ["", "Notes:", ""]
        md += [f"- {n.strip()}" for n in (open(notes) if os.path.exists(notes) else [])]
        md += [f"- errors, {r['tags']['sweep']} N={r['tags']['n']} items={r['tags']['items']} c={r['c']} "
               f"{r['tags']['gateway']}: {r.get('error_kinds')}" for r in bad]
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(md) + "\n")


def plot(out, rows):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweeps = [s for s in SWEEPS if s in rows]
    fig, axes = plt.subplots(1, len(sweeps), figsize=(5.2 * len(sweeps), 4.8), squeeze=False)
    colors = {"gogw": "tab:blue", "shardstream": "tab:orange"}
    for ax, sweep in zip(axes[0], sweeps):
        title, xlabel, _ = SWEEPS[sweep]
        xs = sorted(rows[sweep])
        right = ax.twinx()
        handles = []
        for gw in GATEWAYS:
            pts = [(x, metrics(rows[sweep][x][gw])) for x in xs if gw in rows[sweep][x]]
            cpu = [(x, m["cpu"]) for x, m in pts if m["cpu"] is not None]
            ttlb = [(x, m["ttlb"]) for x, m in pts if m["ttlb"] is not None]
            if cpu:
                handles += ax.plot(*zip(*cpu), "o-", color=colors[gw], label=f"{gw} CPU ms/req")
            if ttlb:
                handles += right.plot(*zip(*ttlb), "s--", color=colors[gw], alpha=0.55, markersize=4,
                                      label=f"{gw} TTLB p50 ms")
        for x in xs:  # shardstream's CPU over gogw's, written at shardstream's point
            g, s = (metrics(rows[sweep][x][k]) if k in rows[sweep][x] else {} for k in GATEWAYS)
            if s.get("cpu") and g.get("cpu"):
                ax.annotate(f"{s['cpu'] / g['cpu']:.2f}x", (x, s["cpu"]), textcoords="offset points",
                            xytext=(0, 7), ha="center", fontsize=8, color=colors["shardstream"])
        if sweep == "items":
            for a in (ax, right):
                a.set_xscale("log")
                a.set_yscale("log")
        elif sweep == "clients":
            ax.set_xscale("log", base=2)
        ax.set_xticks(xs)
        ax.set_xticklabels([str(x) for x in xs])
        ax.minorticks_off()
        ax.margins(y=0.12)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("CPU ms per request (gateway tree)")
        right.set_ylabel("TTLB p50, ms (dashed)")
        if sweep != "items":
            ax.set_ylim(bottom=0)
            right.set_ylim(bottom=0)
        any_run = next(iter(rows[sweep][xs[0]].values()))
        sub = {"shards": f"{int(any_run['tags']['n']) * int(any_run['tags']['items'])} items in all, c={any_run['c']}",
               "items": f"{any_run['tags']['n']} shards, c={any_run['c']}",
               "clients": f"{any_run['tags']['n']} shards x {any_run['tags']['items']} items"}[sweep]
        ax.set_title(f"{title}\n({sub})", fontsize=10)
        ax.grid(True, alpha=0.3)
    fig.suptitle("shardstream (1 process) vs gogw: cost per request; labels = shardstream CPU ÷ gogw CPU",
                 fontsize=10)
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(os.path.join(out, "scaling.png"), dpi=110)


def main(argv):
    if argv[:1] == ["--line"]:
        return line(argv[1])
    draw = argv[:1] != ["--no-plot"]
    out = argv[-1]
    rows = load(out)
    if draw and rows:
        plot(out, rows)
    report(out, rows, draw and bool(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
