"""Could the gateway pass items through as raw bytes instead of re-encoding?

    python bench/passthrough.py [--items 20000]

Passing an item on unparsed needs its byte span in the shard's body. This
compares, on one core and the same ~600-byte items as bench/core.py:
ijson's C backend parsing every item into Python objects (what the gateway
does), a byte-level scanner in Python that only finds item boundaries (the
fastest pure-Python way to get spans: a compiled regex skips strings and
plain bytes, a loop handles brackets), and orjson re-encoding the parsed
items (what passthrough would save).
"""

from __future__ import annotations

import argparse
import re
import time

import ijson
import orjson

from core import body

# Everything up to the next bracket or brace, strings (with escapes) included.
_PLAIN = re.compile(rb'[^"\[\]{}]*(?:"(?:[^"\\]|\\.)*"[^"\[\]{}]*)*')


def scan(doc: bytes) -> int:
    """Count the items of the first array by their byte spans."""
    pos, depth, spans, end = doc.index(b"[") + 1, 0, 0, len(doc)
    match = _PLAIN.match
    while pos < end:
        pos = match(doc, pos).end()
        if pos >= end:
            break
        c = doc[pos]
        if c in (123, 91):  # { [
            depth += 1
        elif c in (125, 93):  # } ]
            if depth == 0:
                break
            depth -= 1
            if depth == 0:
                spans += 1
        pos += 1
    return spans


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>10,.0f} items/s"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=20000)
    a = ap.parse_args()
    doc = body(0, a.items)
    t = time.perf_counter()
    parsed = list(ijson.items(doc, "data.item", use_float=False))
    t_parse = time.perf_counter() - t
    t = time.perf_counter()
    spans = scan(doc)
    t_scan = time.perf_counter() - t
    assert spans == len(parsed) == a.items
    t = time.perf_counter()
    for item in parsed:
        orjson.dumps(item, option=orjson.OPT_PASSTHROUGH_SUBCLASS, default=str)
    t_encode = time.perf_counter() - t
    print(f"ijson yajl2_c, parse to objects: {rate(a.items, t_parse)}")
    print(f"Python byte scanner, spans only: {rate(a.items, t_scan)}")
    print(f"orjson re-encode of parsed items:{rate(a.items, t_encode)}")


if __name__ == "__main__":
    main()
