"""Items per second of the sans-IO core alone (parse + merge + encode), one core.

    python bench/core.py [--items 5000] [--shards 4] [--chunk 65536] [--sorted]

Feeds ~600-byte items (like the kit's shardsim) from N shard bodies, in
chunks, round-robin, into one Scatter and drains its output; no network.
"""

from __future__ import annotations

import argparse
import json
import time

from shardstream.encode import JSONListEncoder
from shardstream.merge import InterleavedMerge, OrderedMerge, sort_key
from shardstream.parse import BACKEND
from shardstream.scatter import Scatter


def body(shard: int, n: int) -> bytes:
    items = [{
        "id": i, "shard": shard, "vendor_id": f"v{shard}{i % 50}",
        "title": f"Sunset kayak tour number {i} with a local guide and snacks",
        "starts_at": f"2027-03-{1 + i // 1440:02d}T{i // 60 % 24:02d}:{i % 60:02d}:00Z",
        "price": {"amount": 49.5 + i % 100, "currency": "EUR"},
        "capacity": 12, "seats_left": i % 12, "languages": ["en", "de", "fr"],
        "description": "x" * 300,
    } for i in range(n)]
    return json.dumps({"data": items, "meta": {"total": n}}).encode()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=5000)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--chunk", type=int, default=65536)
    ap.add_argument("--sorted", action="store_true")
    a = ap.parse_args()
    bodies = [body(s, a.items) for s in range(a.shards)]
    merge = (OrderedMerge(a.shards, sort_key("starts_at")) if a.sorted
             else InterleavedMerge(a.shards))
    sc = Scatter([f"s{i}" for i in range(a.shards)], "data.item", JSONListEncoder(), merge)
    out = 0
    start = time.perf_counter()
    for pos in range(0, max(map(len, bodies)), a.chunk):
        for s, b in enumerate(bodies):
            if pos < len(b):
                sc.feed(s, b[pos:pos + a.chunk])
                out += len(sc.take())
    for s in range(a.shards):
        sc.end(s)
    out += len(sc.take())
    elapsed = time.perf_counter() - start
    n = a.items * a.shards
    mb = sum(map(len, bodies)) / 1e6
    print(f"backend {BACKEND}: {n} items ({mb:.1f} MB) in {elapsed:.3f} s = "
          f"{n / elapsed:,.0f} items/s, {mb / elapsed:.1f} MB/s in, {out / 1e6:.1f} MB out"
          f"{' (sorted merge)' if a.sorted else ''}")


if __name__ == "__main__":
    main()
