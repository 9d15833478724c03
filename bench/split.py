"""Items/s of ItemParser.feed vs the native ItemSplitter.feed on a ~3 MB body.

    /tmp/dev/bin/python bench/split.py
"""

from __future__ import annotations

import json
import random
import time

from shardstream.core.parse import ItemParser, prepare
from shardstream.core.split import NATIVE, ItemSplitter

CHUNK = 16 * 1024
ROUNDS = 5


def body(target: int = 3_000_000) -> tuple[bytes, int]:
    rng = random.Random(7)
    items, size, i = [], 0, 0
    while size < target:
        i += 1
        item = json.dumps({
            "id": i, "vendor_id": f"v{rng.randint(1, 999)}",
            "title": rng.choice(["Flamenco night", "Tapas tour", "Sagrada Família visit",
                                 "Cooking class — paella", "Montjuïc by bike"]) + f" #{i}",
            "starts_at": f"2027-03-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00Z",
            "price": {"amount": round(rng.uniform(5, 500), 2), "currency": "EUR"},
            "languages": rng.sample(["es", "fr", "en", "de", "ca"], 2),
            "rating": round(rng.uniform(1, 5), 1),
        }, ensure_ascii=False, separators=(",", ":"))
        items.append(item)
        size += len(item.encode()) + 1
    doc = '{"data":[' + ",".join(items) + f'],"meta":{{"total":{len(items)}}}}}'
    return doc.encode(), len(items)


def run(cls: type, doc: bytes) -> tuple[float, int]:
    best = float("inf")
    n = 0
    for _ in range(ROUNDS):
        p = cls("data.item", "meta.total")
        t = time.perf_counter()
        n = 0
        for i in range(0, len(doc), CHUNK):
            n += len(p.feed(doc[i : i + CHUNK]))
        n += len(p.close())
        best = min(best, time.perf_counter() - t)
        assert p.total == n
    return best, n


def main() -> None:
    prepare()
    doc, count = body()
    print(f"body: {len(doc) / 1e6:.2f} MB, {count} items, {CHUNK // 1024} KiB chunks, "
          f"best of {ROUNDS}")
    rows = [("ItemParser (ijson yajl2_c)", *run(ItemParser, doc))]
    if NATIVE:
        rows.append(("ItemSplitter (native)", *run(ItemSplitter, doc)))
    print(f"{'parser':<28}{'seconds':>10}{'items/s':>14}{'MB/s':>10}{'speedup':>9}")
    base = rows[0][1]
    for name, secs, n in rows:
        assert n == count
        print(f"{name:<28}{secs:>10.4f}{n / secs:>14,.0f}{len(doc) / secs / 1e6:>10.1f}"
              f"{base / secs:>8.1f}x")


if __name__ == "__main__":
    main()
