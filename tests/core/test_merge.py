"""The merges: arrival order, and vtgate's ordered k-way merge."""

from __future__ import annotations

import functools

import pytest
from orders import reference_cmp

from shardstream.core.merge import InterleavedMerge, OrderedMerge, Unsorted, sort_key


def test_interleaved_merge_hands_out_batches_in_arrival_order():
    m = InterleavedMerge(2)
    m.push(1, ["b1"])
    m.push(0, ["a1", "a2"])
    m.push(0, [])
    assert m.pop() == [(1, ["b1"]), (0, ["a1", "a2"])]
    assert m.pop() == []


def test_sort_key_follows_the_documented_order():
    values = [None, "b", "a", 10, 2.5, -1, True, False, "2027-01-01T00:00:00Z", "\u00e9", "Z", [1]]
    items = [{"k": v} if v is not None else {} for v in values]
    got = [i.get("k") for i in sorted(items, key=sort_key("k"))]
    want = sorted(values, key=functools.cmp_to_key(reference_cmp))
    assert got == want
    desc = [i.get("k") for i in sorted(items, key=sort_key("k", descending=True))]
    present = [v for v in want if v is not None]
    assert desc == present[::-1] + [None]  # missing stays last when descending


def test_ordered_merge_waits_for_every_open_shard_then_breaks_ties_by_shard():
    m = OrderedMerge(3, sort_key("k"))
    m.push(1, [{"k": 1, "s": 1}, {"k": 2, "s": 1}])
    m.push(0, [{"k": 1, "s": 0}])
    assert m.pop() == []  # shard 2 has said nothing yet
    m.push(2, [{"k": 5, "s": 2}])
    out = [(s, i["k"]) for s, items in m.pop() for i in items]
    assert out == [(0, 1)]  # tie on k=1: shard 0 first; its next item could be a 1 too
    m.end(0)
    out = [(s, i["k"]) for s, items in m.pop() for i in items]
    assert out == [(1, 1), (1, 2)]  # then shard 1 runs dry while still open
    m.end(1)
    assert [(s, i["k"]) for s, items in m.pop() for i in items] == [(2, 5)]
    m.end(2)
    assert m.pop() == []


def test_a_value_too_deep_to_encode_still_sorts():
    deep = node = {}
    for _ in range(300):
        node["x"] = {}
        node = node["x"]
    m = OrderedMerge(2, sort_key("k"))
    m.push(0, [{"k": 1}, {"k": deep}])
    m.push(1, [{"k": 2}])
    m.end(0)
    m.end(1)
    assert [i["k"] for _, b in m.pop() for i in b][:2] == [1, 2]


def test_ordered_merge_respects_the_budget_and_reports_unsorted_streams():
    m = OrderedMerge(1, sort_key("k"))
    m.push(0, [{"k": 1}, {"k": 2}, {"k": 3}])
    assert sum(len(b) for _, b in m.pop(2)) == 2
    with pytest.raises(Unsorted):
        m.push(0, [{"k": 4}, {"k": 0}])
    m.end(0)
    assert [i["k"] for _, b in m.pop() for i in b] == [3, 4]


def test_interleaved_merge_budget_keeps_the_rest():
    m = InterleavedMerge(2)
    m.push(0, [1, 2, 3])
    m.push(1, [4])
    assert m.pop(2) == [(0, [1, 2])]
    assert m.queued(0) == 1
    assert m.pop() == [(0, [3]), (1, [4])]
