"""Ordered merge, global ids, list parameters and cursors: the sans-IO core.

The property tests run whole cursor chains through :class:`Scatter` with
simulated shards that answer exactly what the gateway asks for (sort, limit,
offset), feeding their bytes in random interleavings and chunk sizes.
"""

from __future__ import annotations

import functools
import json
import re
from urllib.parse import parse_qs

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardstream import ids, paging
from shardstream.config import Route
from shardstream.encode import JSONListEncoder
from shardstream.merge import InterleavedMerge, OrderedMerge, Unsorted, sort_key
from shardstream.scatter import Scatter

ROUTE = Route(path="/v3/events", mode="scatter", methods=frozenset({"GET"}), items="data.item",
              sort=("k", "p.q"), max_limit=50, total="meta.total", id_fields=("id",))
SECRET = b"s" * 32


# -- ordering -------------------------------------------------------------------------


def reference_cmp(a, b):
    """The documented order, written independently of the product: null/missing
    last; then booleans < numbers < strings < arrays/objects; numbers numerically,
    strings by code point."""

    def rank(v):
        return 0 if isinstance(v, bool) else 1 if isinstance(v, (int, float)) else \
            2 if isinstance(v, str) else 3

    if a is None or b is None:
        return (a is None) - (b is None)
    if rank(a) != rank(b):
        return rank(a) - rank(b)
    if rank(a) == 3:
        a, b = json.dumps(a, separators=(",", ":")), json.dumps(b, separators=(",", ":"))
    return (a > b) - (a < b)


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


# -- global ids -----------------------------------------------------------------------

local_ids = st.integers() | st.text(min_size=1, max_size=20)


@given(st.sampled_from(["eu", "us-east", "s_1", "A9"]), local_ids)
def test_global_ids_round_trip_and_are_url_safe(shard, local):
    gid = ids.encode(shard, local)
    assert re.fullmatch(r"[A-Za-z0-9._~-]+", gid)
    assert ids.decode(gid) == (shard, local)


@given(local_ids, local_ids)
def test_global_ids_never_collide(a, b):
    assert ids.encode("s1", a) != ids.encode("s2", a)
    if a != b or type(a) is not type(b):
        assert ids.encode("s1", a) != ids.encode("s1", b)


@pytest.mark.parametrize("bad", ["", "eu", "eu~", "eu~x1", "eu~i1.5", "eu~r a", "~i1", "eu~b%%", 42])
def test_malformed_global_ids(bad):
    with pytest.raises(ids.BadGlobalId):
        ids.decode(bad)


def test_globalize_and_localize_nested_paths():
    item = {"id": 7, "vendor": {"id": "v1"}, "sessions": [{"id": 1}, {"id": 2}], "n": None}
    ids.globalize(item, ids.split_paths(["id", "vendor.id", "sessions.id", "missing.id"]), "eu")
    assert item == {"id": "eu~i7", "vendor": {"id": "eu~rv1"},
                    "sessions": [{"id": "eu~i1"}, {"id": "eu~i2"}], "n": None}
    assert ids.localize(item, ids.split_paths(["id", "sessions.id"])) == {"eu"}
    assert item["id"] == 7 and item["sessions"] == [{"id": 1}, {"id": 2}]


# -- list parameters and cursors --------------------------------------------------------


def args(**kw):
    return {k.encode(): [str(v).encode()] for k, v in kw.items()}


@pytest.mark.parametrize("kw,message", [
    ({"sort": "nope"}, "cannot sort by"),
    ({"limit": "\u00b2"}, "limit must be"),
    ({"offset": "9" * 5000}, "offset must be"),
    ({"sort": "--k"}, "cannot sort by"),
    ({"limit": "51"}, "above this route's maximum of 50"),
    ({"limit": "0"}, "limit must be"),
    ({"limit": "x"}, "limit must be"),
    ({"offset": "-1"}, "offset must be"),
])
def test_bad_list_parameters_are_400(kw, message):
    with pytest.raises(paging.BadListQuery) as e:
        paging.parse(ROUTE, args(**kw), SECRET)
    assert e.value.status == 400 and message in e.value.message


def test_repeated_parameter_is_400():
    with pytest.raises(paging.BadListQuery):
        paging.parse(ROUTE, {b"limit": [b"1", b"2"]}, SECRET)


def test_default_limit_is_the_maximum():
    assert paging.parse(ROUTE, {}, SECRET).limit == 50


def test_default_sort_applies_when_the_client_gives_none():
    import dataclasses

    route = dataclasses.replace(ROUTE, default_sort="-k")
    assert paging.parse(route, {}, SECRET).sort == "-k"
    assert paging.parse(route, args(sort="p.q"), SECRET).sort == "p.q"


def test_shard_query_keeps_client_params_and_pushes_down_limit():
    raw = b"city=Lisbon&limit=10&%6Fffset=5&sort=-k&x=%20y"
    q = paging.parse(ROUTE, args(sort="-k", limit=10, offset=5), SECRET, raw)
    assert paging.shard_query(ROUTE, q, "s1") == b"city=Lisbon&x=%20y&sort=-k&limit=15"
    cursor = paging.encode_cursor(ROUTE, q, {"s1": 7, "s2": 0}, SECRET)
    q2 = paging.parse(ROUTE, args(cursor=cursor), SECRET)
    assert (q2.sort, q2.limit, q2.offset) == ("-k", 10, 0)
    # the cursor carries the filters of its list
    assert paging.shard_query(ROUTE, q2, "s1") == b"city=Lisbon&x=%20y&sort=-k&limit=10&offset=7"
    assert paging.shard_query(ROUTE, q2, "s2") == b"city=Lisbon&x=%20y&sort=-k&limit=10"
    same = paging.parse(ROUTE, args(cursor=cursor), SECRET, b"city=Lisbon&x=%20y&cursor=" + cursor.encode())
    assert same.filters == q2.filters
    with pytest.raises(paging.BadListQuery):
        paging.parse(ROUTE, args(cursor=cursor), SECRET, b"city=Porto&cursor=" + cursor.encode())


def test_cursor_rules():
    q = paging.parse(ROUTE, args(sort="k", limit=3), SECRET)
    cursor = paging.encode_cursor(ROUTE, q, {"s1": 1}, SECRET)
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", cursor)  # URL-safe as is
    assert paging.parse(ROUTE, args(cursor=cursor, limit=5), SECRET).limit == 5
    assert paging.parse(ROUTE, args(cursor=cursor, sort="k"), SECRET).sort == "k"
    with pytest.raises(paging.BadListQuery):
        paging.parse(ROUTE, args(cursor=cursor, sort="-k"), SECRET)
    with pytest.raises(paging.BadListQuery):
        paging.parse(ROUTE, args(cursor=cursor, offset=1), SECRET)
    other = Route(path="/v3/other", mode="scatter", methods=None, items="item")
    with pytest.raises(paging.BadCursor):
        paging.parse(other, args(cursor=cursor), SECRET)
    with pytest.raises(paging.BadCursor):
        paging.parse(ROUTE, args(cursor=cursor), b"another secret, same length....")


@given(st.binary(max_size=60), st.integers(min_value=0, max_value=200))
def test_tampered_or_random_cursors_are_400_never_500(noise, where):
    q = paging.parse(ROUTE, args(sort="k", limit=3), SECRET)
    cursor = paging.encode_cursor(ROUTE, q, {"s1": 1}, SECRET)
    for candidate in (noise.decode("latin-1"), cursor[:where] + "A" + cursor[where + 1:],
                      cursor + noise.hex()):
        if candidate == cursor:
            continue
        with pytest.raises(paging.BadCursor):
            paging.decode_cursor(candidate, ROUTE, SECRET)


# -- whole cursor chains through the Scatter ---------------------------------------------

key_values = st.one_of(st.none(), st.integers(-3, 3), st.sampled_from(["a", "b", "B", "é"]))
shard_contents = st.lists(st.lists(key_values, max_size=12), min_size=1, max_size=4)


def shard_body(items, query: dict[str, list[str]]) -> bytes:
    """A shard that does what it is asked: sort (stable), offset, limit, total."""
    ordered = list(items)
    if "sort" in query:
        spec = query["sort"][0]
        ordered.sort(key=sort_key(spec.lstrip("-"), spec.startswith("-")))
    offset = int(query.get("offset", ["0"])[0])
    page = ordered[offset:]
    if "limit" in query:
        page = page[: int(query["limit"][0])]
    return json.dumps({"data": page, "meta": {"total": len(items)}}).encode()


def run_page(shards, route, client_args, rng):
    names = [f"s{i}" for i in range(len(shards))]
    q = paging.parse(route, client_args, SECRET)
    merge = (OrderedMerge(len(names), sort_key(q.sort_path, q.descending)) if q.sort
             else InterleavedMerge(len(names)))
    sc = Scatter(names, route.items, JSONListEncoder(), merge, limit=q.limit,
                 offset=0 if q.positions is not None else q.offset, quota=q.quota(),
                 starts=q.positions, total=route.total, id_fields=(),
                 cursor=lambda p: paging.encode_cursor(route, q, p, SECRET))
    bodies = {}
    for i, name in enumerate(names):
        query = paging.shard_query(route, q, name).decode()
        bodies[i] = shard_body(shards[i], parse_qs(query))
    out = b""
    pending = dict(bodies)
    while pending:
        i = rng.choice(sorted(pending))
        body = pending[i]
        n = rng.randint(1, 40)
        chunk, pending[i] = body[:n], body[n:]
        sc.feed(i, chunk)
        if not pending[i]:
            del pending[i]
            sc.end(i)
        for j in sc.release():
            pending.pop(j, None)
        out += sc.take()
    out += sc.take()
    assert sc.done and sc.closed
    return json.loads(out)


@settings(max_examples=150, deadline=None)
@given(shard_contents, st.integers(1, 7), st.booleans(), st.booleans(), st.randoms())
def test_following_cursors_returns_every_item_once_in_global_order(
        keys, page, descending, sorted_, rng):
    shards = [[{"k": k, "s": s, "n": n} if k is not None else {"s": s, "n": n}
               for n, k in enumerate(ks)] for s, ks in enumerate(keys)]
    route = ROUTE
    first = {"limit": page}
    if sorted_:
        first["sort"] = "-k" if descending else "k"
    got, client_args, pages = [], args(**first), 0
    while True:
        doc = run_page(shards, route, client_args, rng)
        pages += 1
        assert len(doc["data"]) <= page
        got += doc["data"]
        assert doc["meta"]["total"] == sum(len(s) for s in shards)
        cursor = doc["meta"]["next_cursor"]
        if cursor is None:
            break
        assert doc["data"], "a cursor must not lead to an empty page here"
        client_args = args(cursor=cursor)
        assert pages < 100
    everything = [item for shard in shards for item in shard]
    assert sorted((i["s"], i["n"]) for i in got) == sorted((i["s"], i["n"]) for i in everything)
    if sorted_:
        def cmp(a, b):
            c = reference_cmp(a.get("k"), b.get("k"))
            if descending and a.get("k") is not None and b.get("k") is not None:
                c = -c
            return c or (a["s"] - b["s"]) or (a["n"] - b["n"])
        assert got == sorted(everything, key=functools.cmp_to_key(cmp))
    else:  # arrival order, but each shard's own order is kept
        for s in range(len(shards)):
            assert [i["n"] for i in got if i["s"] == s] == list(range(len(shards[s])))


@settings(max_examples=100, deadline=None)
@given(shard_contents, st.integers(0, 10), st.integers(1, 10), st.randoms())
def test_limit_and_offset_slice_the_merged_list(keys, offset, limit, rng):
    shards = [[{"k": k, "s": s, "n": n} for n, k in enumerate(ks) if k is not None]
              for s, ks in enumerate(keys)]
    doc = run_page(shards, ROUTE, args(sort="k", limit=limit, offset=offset), rng)
    everything = sorted((i for shard in shards for i in shard),
                        key=lambda i: (sort_key("k")(i), i["s"], i["n"]))
    assert doc["data"] == everything[offset: offset + limit]
