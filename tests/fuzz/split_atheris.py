"""A fuzz target for the native item splitter (atheris, libFuzzer's engine).

    pip install atheris
    python tests/fuzz/split_atheris.py -max_total_time=600      # ten minutes
    python tests/fuzz/split_atheris.py -runs=100000 -max_len=4096

Each input is cut into a document and the points where it is split into
chunks. The splitter must never crash or raise anything but its ParseError
kinds; every item it returns must be valid JSON; and where ijson's
ItemParser (the reference) reads the same items without error, the two
agree item for item. CI runs :func:`check` on random inputs
(tests/core/test_split.py), not this engine.
"""

from __future__ import annotations

import sys

from shardstream.core import parse, split
from shardstream.core.encode import loads

PREFIXES = ("data.item", "item", "a.b.item")


def check(data: bytes) -> None:
    """One input: its first byte picks the prefix and the chunk size."""
    if not data:
        return
    prefix = PREFIXES[data[0] % len(PREFIXES)]
    size = 1 + data[0] // len(PREFIXES) % 64
    doc = data[1:]
    chunks = [doc[i:i + size] for i in range(0, len(doc), size)]
    got: list[bytes] = []
    try:
        s = split.ItemSplitter(prefix, "meta.total")
        for chunk in chunks:
            got += s.feed(chunk)
        got += s.close()
        ok = True
    except parse.ParseError as e:  # malformed_json, truncated, no_list: the only ways out
        got += e.items
        ok = False
    for span in got:
        loads(span)  # every span is one valid JSON value (ValueError would fail the run)
    if not ok:
        return
    try:
        p = parse.ItemParser(prefix, "meta.total")
        ref = [item for chunk in chunks for item in p.feed(chunk)] + p.close()
    except (parse.ParseError, UnicodeDecodeError, ArithmeticError):
        return  # the reference refuses what it cannot hold (documented differences)
    assert [loads(span) for span in got] == ref, (doc[:200], got[:3], ref[:3])


def main() -> None:
    import atheris

    parse.prepare()
    # The C extension is not built with coverage counters: the engine is guided
    # by the Python paths (which error, how many items, agreement), seeded with
    # real shard bodies so that mutations start from lists, not noise.
    atheris.Setup(sys.argv, atheris.instrument_func(check))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
