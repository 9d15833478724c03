"""Items per second of the sans-IO core alone (parse + merge + encode), one core.

    python bench/core.py [--items 5000] [--shards 4] [--chunk 65536] [--sorted] [--python]

Feeds ~600-byte items (like the kit's shardsim) from N shard bodies, in
chunks, round-robin, into one Scatter (a reactor turn after each round)
and counts the bytes of the Write actions it returns; no network. Items pass
through as bytes (the native splitter) unless --python (or the extension is
not built): then ijson decodes them and orjson encodes them again.
"""

from __future__ import annotations

import argparse
import json
import time

from typing import Sequence

from shardstream.core import parse, split
from shardstream.core.encode import JSONListEncoder
from shardstream.core.merge import InterleavedMerge, OrderedMerge, sort_key
from shardstream.core.scatter import Action, Scatter, Write


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


def written(actions: Sequence[Action]) -> int:
    return sum(len(a.data) for a in actions if isinstance(a, Write))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=5000)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--chunk", type=int, default=65536)
    ap.add_argument("--sorted", action="store_true")
    ap.add_argument("--python", action="store_true", help="ijson, not the native splitter")
    a = ap.parse_args()
    native = split.use_native("python" if a.python else "auto")
    bodies = [body(s, a.items) for s in range(a.shards)]
    merge = (OrderedMerge(a.shards, sort_key("starts_at", raw=native)) if a.sorted
             else InterleavedMerge(a.shards))
    parse.prepare()
    sc = Scatter([f"s{i}" for i in range(a.shards)], "data.item", JSONListEncoder(raw=native),
                 merge, native=native)
    out = 0
    start = time.perf_counter()
    for pos in range(0, max(map(len, bodies)), a.chunk):
        for s, b in enumerate(bodies):
            if pos < len(b):
                out += written(sc.data(s, b[pos:pos + a.chunk]))
        out += written(sc.tick())  # the reactor turn is over
    for s in range(a.shards):
        out += written(sc.end(s))
    elapsed = time.perf_counter() - start
    n = a.items * a.shards
    mb = sum(map(len, bodies)) / 1e6
    print(f"{split.describe('python' if a.python else 'auto')}: {n} items ({mb:.1f} MB) in {elapsed:.3f} s = "
          f"{n / elapsed:,.0f} items/s, {mb / elapsed:.1f} MB/s in, {out / 1e6:.1f} MB out"
          f"{' (sorted merge)' if a.sorted else ''}")


if __name__ == "__main__":
    main()
