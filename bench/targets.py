"""Issue 15's targets as ratios between rows of one kit run (and, with the
``parts`` preset, each speed change alone: shardstream beside itself with
items decoded by ijson, and with its shards' GETs on Twisted's client).

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
    add("S1 c=1 sorted: TTFI p50 within 3 ms of direct",
        metric(ss("S1", "starts_at", 1), "ttfi_ms"), metric(find(runs, "S1", "direct", None, 1), "ttfi_ms"),
        "within_ms", 3)
    for merge in ("concat", "starts_at"):
        add(f"S1 c=32 {merge}: TTFI p99 <= 0.3x gogw",
            metric(ss("S1", merge, 32), "ttfi_ms", "p99"), metric(g("S1", merge, 32), "ttfi_ms", "p99"),
            "at_most", 0.3)
        add(f"S1 c=32 {merge}: TTLB p50 <= 1.0x gogw",
            metric(ss("S1", merge, 32), "ttlb_ms"), metric(g("S1", merge, 32), "ttlb_ms"), "at_most", 1.0)
        add(f"S1 c=32 {merge}: CPU ms/req <= 1.0x gogw",
            metric(ss("S1", merge, 32), "cpu_ms_per_req"), metric(g("S1", merge, 32), "cpu_ms_per_req"),
            "at_most", 1.0)
    add("S2 c=32: req/s >= 1.0x gogw",
        metric(ss("S2", "concat", 32), "rps"), metric(g("S2", "concat", 32), "rps"), "at_least", 1.0)
    add("S2 c=32: req/s >= 3x flaskgw",
        metric(ss("S2", "concat", 32), "rps"), metric(find(runs, "S2", "flaskgw", "concat", 32), "rps"),
        "at_least", 3.0)
    add("S3 c=4: TTLB p50 <= 1.0x gogw",
        metric(ss("S3", "concat", 4), "ttlb_ms"), metric(g("S3", "concat", 4), "ttlb_ms"), "at_most", 1.0)
    add("S3 c=4: CPU ms/req <= 0.5x gogw",
        metric(ss("S3", "concat", 4), "cpu_ms_per_req"), metric(g("S3", "concat", 4), "cpu_ms_per_req"),
        "at_most", 0.5)
    add("S3 c=4: peak RSS of the whole service <= 0.5x gogw",
        metric(ss("S3", "concat", 4), "peak_rss_mb"), metric(g("S3", "concat", 4), "peak_rss_mb"),
        "at_most", 0.5, "the kit measures the process tree: supervisor and workers")
    if find(runs, "S4", "shardstream", "concat", 4) is not None:
        add("S4 c=4 interleaved: TTFI p50 within 3 ms of direct-fast",
            metric(ss("S4", "concat", 4), "ttfi_ms"),
            metric(find(runs, "S4", "direct-fast", None, 4), "ttfi_ms"), "within_ms", 3)
    return rows


STRICT_GATEWAYS = ("direct", "direct-fast", "gogw", "flaskgw", "shardstream", "shardstream-strict")
STRICT_FIGURES = (("ttfi_p50", "ttfi_ms", "p50"), ("ttfi_p99", "ttfi_ms", "p99"),
                  ("ttlb_p50", "ttlb_ms", "p50"), ("ttlb_p99", "ttlb_ms", "p99"))


PARTS_GATEWAYS = ("gogw", "flaskgw", "shardstream", "shardstream-ijson", "shardstream-twisted")
PARTS_FIGURES = (("ttfi_p50", "ttfi_ms", "p50"), ("ttlb_p50", "ttlb_ms", "p50"),
                 ("req_s", "rps", "p50"), ("cpu_ms_req", "cpu_ms_per_req", "p50"),
                 ("rss_mb", "peak_rss_mb", "p50"))


def side_by_side(runs: list[dict[str, Any]], marker: str, gateways: tuple[str, ...],
                 figures: tuple[tuple[str, str, str], ...]) -> list[dict[str, Any]]:
    """The rows of ``gateways`` per (scenario, merge, c) that has a ``marker`` row, with
    ratios to gogw."""
    rows = []
    cases = sorted({(r["tags"]["scenario"], r["tags"].get("merge"), r["c"]) for r in runs
                    if r.get("tags", {}).get("gateway") == marker})
    for sc, merge, c in cases:
        anchor = find(runs, sc, "gogw", merge, c)
        for gw in gateways:
            run = find(runs, sc, gw, None if gw.startswith("direct") else merge, c)
            if run is None:
                continue
            figs = {k: metric(run, m, st) for k, m, st in figures}
            ratios = {k: figs[k] / metric(anchor, m, st) for k, m, st in figures}
            rows.append({"scenario": sc, "merge": "-" if gw.startswith("direct") else merge,
                         "c": c, "gateway": gw, "ms": figs, "vs_gogw": ratios,
                         "errors": run.get("errors")})
    return rows


def strict(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 14: strict mode (gateway shardstream-strict, `partial = false`) beside partial
    mode and the anchors."""
    return side_by_side(runs, "shardstream-strict", STRICT_GATEWAYS, STRICT_FIGURES)


def parts(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 15: each speed change alone (`bench/run.sh parts`)."""
    rows = side_by_side(runs, "shardstream-ijson", PARTS_GATEWAYS, PARTS_FIGURES)
    return rows or side_by_side(runs, "shardstream-twisted", PARTS_GATEWAYS, PARTS_FIGURES)


def _fmt(x: float, unit: str = "") -> str:
    return "-" if math.isnan(x) else f"{x:.{2 if unit else 1}f}{unit}"


def _table_md(rows: list[dict[str, Any]], title: str, intro: str, columns: list[str],
              keys: list[str], ratio_keys: list[str], errors: bool = False) -> list[str]:
    """A side_by_side table: the figures, then their ratios to gogw."""
    if not rows:
        return []
    head = ["scenario", "merge", "c", "gateway", *columns,
            *(f"{c} ÷ gogw" for c, k in zip(columns, keys) if k in ratio_keys)]
    head += ["errors"] if errors else []
    lines = ["", f"## {title}", "", intro, "", "| " + " | ".join(head) + " |",
             "|---|---|---:|---|" + "---:|" * (len(head) - 4)]
    for r in rows:
        cells = [r["scenario"], r["merge"], str(r["c"]), r["gateway"],
                 *(_fmt(r["ms"][k]) for k in keys),
                 *(_fmt(r["vs_gogw"][k], "x") for k in keys if k in ratio_keys)]
        cells += [str(r["errors"])] if errors else []
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def parts_md(rows: list[dict[str, Any]]) -> list[str]:
    keys = [k for k, _, _ in PARTS_FIGURES]
    return _table_md(
        rows, "Each speed change alone",
        "shardstream-ijson = shardstream with `server.item_parser = \"python\"` (items decoded "
        "by ijson and encoded again); shardstream-twisted = with `upstream.client = "
        "\"twisted\"` (the shards' GETs on Twisted's client). Ratios ÷ gogw in the same run.",
        ["TTFI p50", "TTLB p50", "req/s", "CPU ms/req", "peak RSS MB"], keys, keys[1:])


def strict_md(rows: list[dict[str, Any]]) -> list[str]:
    keys = [k for k, _, _ in STRICT_FIGURES]
    return _table_md(
        rows, "Strict mode (`partial = false`) beside partial mode",
        "shardstream-strict = the same gateway with `partial = false` on the route (no 200 "
        "before every shard's 2xx headers). Floors: partial TTFI ≥ direct-fast's (fastest "
        "shard's first item), strict TTFI ≥ direct's (slowest shard's headers), TTLB ≥ "
        "direct's. Ratios ÷ gogw in the same run.",
        ["TTFI p50", "TTFI p99", "TTLB p50", "TTLB p99"], keys, keys, errors=True)


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
    strict_rows = strict(results["runs"])
    parts_rows = parts(results["runs"])
    json.dump({"meta": meta, "targets": rows, "strict": strict_rows, "parts": parts_rows},
              open(os.path.join(a.out, "targets.json"), "w"), indent=1, default=str)
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
        met = "yes" if r["met"] else "-" if r["measured"] == "not measured" else "**no**"
        lines.append(f"| {r['target']} | {r['measured']} | {met} |")
    lines += strict_md(strict_rows)
    lines += parts_md(parts_rows)
    text = "\n".join(lines) + "\n"
    open(os.path.join(a.out, "targets.md"), "w").write(text)
    print(text)


if __name__ == "__main__":
    main()
