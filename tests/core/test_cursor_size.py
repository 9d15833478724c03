"""A cursor stays short as shards are added, and reads back what it was made of."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from shardstream.core import config, paging

ROUTE = config.parse({"shards": {"s1": {"urls": ["http://127.0.0.1:1"]}},
                      "routes": [{"path": "/v3/events", "mode": "scatter", "items": "data",
                                  "sort": ["starts_at"], "max_limit": 100}]}, "<test>").routes[0]
SECRET = b"s" * 32
QUERY = paging.ListQuery(sort="-starts_at", limit=100, filters="vendor_id=v100")
NAMINGS = {"shard-eu-NN": lambda i: f"shard-eu-{i:02d}", "sN": lambda i: f"s{i}"}


def cursor_size(names: list[str], positions: list[int]) -> int:
    cursor = paging.encode_cursor(ROUTE, QUERY, dict(zip(names, positions, strict=True)), SECRET)
    back = paging.decode_cursor(cursor, ROUTE, SECRET, shards=names)
    assert back["p"] == dict(zip(names, positions, strict=True))
    return len(cursor)


def test_a_cursor_of_64_shards_below_16384_is_at_most_400_characters():
    rng = random.Random(7)
    print()
    for naming, name in NAMINGS.items():
        for n in (8, 32, 64):
            names = [name(i) for i in range(1, n + 1)]
            sizes = {
                "all 16383": cursor_size(names, [16383] * n),
                "random < 16384": max(cursor_size(names, [rng.randrange(16384) for _ in names])
                                      for _ in range(50)),
                "one at 16383, the rest 0": cursor_size(names, [16383] + [0] * (n - 1)),
            }
            print(f"{n:2} shards {naming:11}: "
                  + ", ".join(f"{k} -> {v} chars" for k, v in sizes.items()))
            assert max(sizes.values()) <= 400


names = st.text(min_size=1, max_size=20)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(names, st.integers(0, 2**70) | st.integers(0, 300), max_size=70),
       st.none() | st.text(max_size=30), st.none() | st.integers(1, 2**40),
       st.text(max_size=300), st.lists(names, max_size=5), st.randoms())
def test_a_cursor_reads_back_what_it_was_made_of(positions, sort, limit, filters, added, rng):
    query = paging.ListQuery(sort=sort, limit=limit, filters=filters)
    cursor = paging.encode_cursor(ROUTE, query, positions, SECRET)
    shards = list(positions) + added  # the current shards: these and maybe more, in any order
    rng.shuffle(shards)
    state = paging.decode_cursor(cursor, ROUTE, SECRET, shards=shards)
    assert state == {"s": sort, "l": limit, "f": filters, "p": positions}
