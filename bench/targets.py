"""Issue 5's targets as ratios between rows of one kit run.

Usage: targets.py RESULT_DIR [--commit SHA]
Reads RESULT_DIR/results.json (the kit's report) and writes targets.md and
targets.json beside it, with the machine, the commit and the date.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
from datetime import datetime, timezone
from typing import Any


def find(runs: list[dict[str, Any]], scenario: str, gateway: str, merge: str | None, c: int):
    for r in runs:
        t = r.get("tags", {})
        if (t.get("scenario"), t.get("gateway"), r.get("c")) == (scenario, gateway, c) and (
            merge is None or t.get("merge") in (merge, "-")
        ):
            return r
    return None


def metric(run: dict[str, Any] | None, name: str, stat: str = "p50") -> float:
    if not run or run.get("failed"):
        return math.nan
    if name in ("rps",):
        return float(run.get("rps") or math.nan)
    if name in ("peak_rss_mb", "cpu_ms_per_req"):
        return float((run.get("gateway_proc") or {}).get(name) or math.nan)
    return float((run.get(name) or {}).get(stat, math.nan))


def check(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []

    def add(target, ours, anchor, kind, limit, note=""):
        if kind == "within_ms":
            value, ok = ours - anchor, ours - anchor <= limit
            shown = f"{ours:.1f} vs {anchor:.1f} ms: {value:+.1f} ms (limit +{limit} ms)"
        elif kind == "at_most":
            value = ours / anchor if anchor else math.nan
            ok = value <= limit
            shown = f"{ours:.1f} / {anchor:.1f} = {value:.2f}x (limit {limit}x)"
        else:  # at_least
            value = ours / anchor if anchor else math.nan
            ok = value >= limit
            shown = f"{ours:.1f} / {anchor:.1f} = {value:.2f}x (at least {limit}x)"
        if math.isnan(value):
            ok, shown = False, "not measured"
        rows.append({"target": target, "measured": shown, "value": value, "met": bool(ok),
                     "note": note})

    ss = lambda sc, merge, c: find(runs, sc, "shardstream", merge, c)  # noqa: E731
    g = lambda sc, merge, c: find(runs, sc, "gogw", merge, c)  # noqa: E731
    add("S1 c=1 interleaved: TTFI p50 within 3 ms of direct-fast",
        metric(ss("S1", "concat", 1), "ttfi_ms"), metric(find(runs, "S1", "direct-fast", None, 1), "ttfi_ms"),
        "within_ms", 3)
    add("S1 c=1 interleaved: TTLB p50 <= gogw",
        metric(ss("S1", "concat", 1), "ttlb_ms"), metric(g("S1", "concat", 1), "ttlb_ms"), "at_most", 1.0)
    add("S1 c=1 sorted: TTFI p50 within 3 ms of direct",
        metric(ss("S1", "starts_at", 1), "ttfi_ms"), metric(find(runs, "S1", "direct", None, 1), "ttfi_ms"),
        "within_ms", 3)
    for merge in ("concat", "starts_at"):
        add(f"S1 c=32 {merge}: TTFI p99 <= 0.3x gogw",
            metric(ss("S1", merge, 32), "ttfi_ms", "p99"), metric(g("S1", merge, 32), "ttfi_ms", "p99"),
            "at_most", 0.3)
        add(f"S1 c=32 {merge}: TTLB p50 <= 1.2x gogw",
            metric(ss("S1", merge, 32), "ttlb_ms"), metric(g("S1", merge, 32), "ttlb_ms"), "at_most", 1.2)
        add(f"S1 c=32 {merge}: CPU ms/req <= 1.5x gogw",
            metric(ss("S1", merge, 32), "cpu_ms_per_req"), metric(g("S1", merge, 32), "cpu_ms_per_req"),
            "at_most", 1.5)
    add("S2 c=32: req/s >= 0.6x gogw",
        metric(ss("S2", "concat", 32), "rps"), metric(g("S2", "concat", 32), "rps"), "at_least", 0.6)
    add("S2 c=32: req/s >= 2.5x flaskgw",
        metric(ss("S2", "concat", 32), "rps"), metric(find(runs, "S2", "flaskgw", "concat", 32), "rps"),
        "at_least", 2.5)
    add("S3 c=4: peak RSS <= 0.25x gogw",
        metric(ss("S3", "concat", 4), "peak_rss_mb"), metric(g("S3", "concat", 4), "peak_rss_mb"),
        "at_most", 0.25)
    add("S3 c=4: TTLB p50 <= 1.2x gogw",
        metric(ss("S3", "concat", 4), "ttlb_ms"), metric(g("S3", "concat", 4), "ttlb_ms"), "at_most", 1.2)
    add("S4 c=4 interleaved: TTFI p50 within 3 ms of direct-fast",
        metric(ss("S4", "concat", 4), "ttfi_ms"), metric(find(runs, "S4", "direct-fast", None, 4), "ttfi_ms"),
        "within_ms", 3)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--commit", default="unknown")
    a = ap.parse_args()
    results = json.load(open(os.path.join(a.out, "results.json")))
    rows = check(results["runs"])
    meta = {
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": a.commit,
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, {platform.platform()}",
        "python": platform.python_version(),
        "kit": results.get("meta", {}),
    }
    json.dump({"meta": meta, "targets": rows}, open(os.path.join(a.out, "targets.json"), "w"),
              indent=1, default=str)
    lines = [
        f"# shardstream targets ({meta['date_utc']}, commit {meta['commit']})",
        "",
        f"Machine: {meta['machine']}; Python {meta['python']}. All figures from one run of the kit "
        "(same shards, same load client); ratios are between rows of that run.",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['target']} | {r['measured']} | {'yes' if r['met'] else '**no**'} |")
    text = "\n".join(lines) + "\n"
    open(os.path.join(a.out, "targets.md"), "w").write(text)
    print(text)


if __name__ == "__main__":
    main()
