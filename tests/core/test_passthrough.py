"""Items as bytes (the native splitter) against items as objects (ijson): the
same request, fed the same chunks, gives the same document and the same
decisions, whatever the items hold, however the shard spaced them, with a
sorted or interleaved merge, id rewriting and owner filtering.

Only the bytes differ: passed through, an item keeps the shard's spacing,
escapes and number spellings; decoded, it is written again compactly.
"""

from __future__ import annotations

import json
import random
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardstream.core import config, ids, paging, split
from shardstream.core.encode import NDJSONEncoder, loads
from shardstream.core.merge import sort_key
from shardstream.core.paths import DottedPath
from shardstream.core.scatter import Cancel, Commit, Pause, Resume, scatter_for

pytestmark = pytest.mark.skipif(not split.NATIVE, reason="the native splitter is not built")

SECRET = b"p" * 32
ROUTE = config.parse({"shards": {"s1": {"urls": ["http://127.0.0.1:1"]}},
                      "shard_map": {"owner": {"t1": "s1"}},
                      "routes": [{"path": "/v3/events", "mode": "scatter", "items": "data.item",
                                  "sort": ["k", "p.q"], "max_limit": 50, "total": "meta.total",
                                  "id_fields": ["id", "refs.id"], "owner_field": "owner"}]},
                     "<test>").routes[0]
# Nothing to rewrite or filter: the native path joins the shards' bytes as they are.
PLAIN = config.parse({"shards": {"s1": {"urls": ["http://127.0.0.1:1"]}},
                      "routes": [{"path": "/v3/events", "mode": "scatter", "items": "data.item",
                                  "sort": ["k", "p.q"], "max_limit": 50,
                                  "total": "meta.total"}]},
                     "<test>").routes[0]

numbers = st.one_of(st.integers(-10**30, 10**30), st.integers(-3, 3),
                    st.decimals(allow_nan=False, allow_infinity=False, places=3))
text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=6)
scalars = st.one_of(st.none(), st.booleans(), numbers, text)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(text, inner, max_size=3)), max_leaves=8)
keys = st.one_of(st.none(), st.integers(-3, 3), st.sampled_from(["a", "b", "é"]),
                 st.decimals(allow_nan=False, allow_infinity=False, places=1, min_value=-2,
                             max_value=2))
items = st.fixed_dictionaries(
    {"k": keys},
    optional={"id": st.one_of(st.integers(), text), "extra": values, "owner": st.sampled_from(
        ["t1", "t2", "t3"]), "refs": st.lists(st.fixed_dictionaries({"id": st.integers()}),
                                              max_size=2),
        "p": st.fixed_dictionaries({"q": keys})})


def dump(value, style: int) -> str:
    """The same JSON spelt as shards may spell it: compact, spaced, indented, escaped."""
    def default(o):
        raise TypeError(o)

    text = json.dumps(value, ensure_ascii=bool(style & 1), indent=2 if style & 2 else None,
                      separators=(",", ":") if style & 4 else None, default=default,
                      cls=_Exact)
    return text


class _Exact(json.JSONEncoder):
    """Decimals written digit for digit (as a shard's own number)."""

    def iterencode(self, o, _one_shot=False):
        return super().iterencode(_plain(o), _one_shot)


class _Num(float):
    def __new__(cls, d):
        self = super().__new__(cls, float(d))
        self.d = d
        return self

    def __repr__(self):
        return str(self.d)


def _plain(o):
    if isinstance(o, Decimal):
        return _Num(o)
    if isinstance(o, dict):
        return {k: _plain(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_plain(v) for v in o]
    return o


def run(native: bool, bodies: list[bytes], client: dict, ndjson: bool, seed: int,
        route=ROUTE):
    """One page through the state machine; the decoded document and the
    decisions, in order."""
    names = [f"s{i}" for i in range(len(bodies))]
    q = paging.parse(route, {k.encode(): [str(v).encode()] for k, v in client.items()}, SECRET,
                     shards=names)

    def foreign(shard, owner):  # t1 lives on s0, t2 on s1; t3 nowhere known
        return {"t1": "s0", "t2": "s1"}.get(owner, shard) != shard

    sc = scatter_for(route, q, names, "application/x-ndjson" if ndjson else None, SECRET,
                     foreign=foreign, native=native)
    rng = random.Random(seed)
    out, decisions, later = bytearray(), [], 0
    pending = dict(enumerate(bodies))
    reading = set(pending)

    def act(actions):
        nonlocal later
        for a in actions:
            if a.__class__.__name__ == "Write":
                out.extend(a.data)
            elif a.__class__.__name__ == "Later":
                later += 1
            else:
                decisions.append(a)
                if isinstance(a, Cancel):
                    reading.discard(a.shard)

    while pending:
        i = rng.choice(sorted(pending))
        n = rng.randint(1, 60)
        chunk, pending[i] = pending[i][:n], pending[i][n:]
        if i in reading:
            act(sc.data(i, chunk))
        if not pending[i]:
            del pending[i]
            if i in reading:
                act(sc.end(i))
        if rng.random() < 0.5:
            while later:
                later -= 1
                act(sc.tick())
    while later:
        later -= 1
        act(sc.tick())
    assert sc.closed
    if ndjson:
        doc = [loads(line) for line in bytes(out).split(b"\n") if line]
    else:
        doc = loads(bytes(out))
    return doc, [d for d in decisions if isinstance(d, (Pause, Resume, Cancel, Commit))], out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(items, max_size=8), min_size=1, max_size=3),
       st.lists(st.integers(0, 7), min_size=3, max_size=3), st.booleans(), st.booleans(),
       st.integers(0, 10), st.one_of(st.none(), st.integers(1, 12)), st.integers(0, 2**32),
       st.sampled_from([ROUTE, PLAIN]))
def test_bytes_and_objects_give_the_same_page(shards, styles, sorted_, ndjson, offset, limit,
                                              seed, route):
    client: dict = {"offset": offset}
    if limit is not None:
        client["limit"] = limit
    if sorted_:
        client["sort"] = "k"
        shards = [sorted(s, key=sort_key("k")) for s in shards]
    bodies = [dump({"data": s, "meta": {"total": len(s)}}, styles[i]).encode()
              for i, s in enumerate(shards)]
    doc_p, decided_p, _ = run(False, bodies, client, ndjson, seed, route)
    doc_n, decided_n, raw = run(True, bodies, client, ndjson, seed, route)
    assert doc_n == doc_p
    assert decided_n == decided_p
    if ndjson:  # one item per line, even from an indented shard
        assert all(line.startswith((b"{", b"[")) for line in bytes(raw).split(b"\n") if line)


def test_an_item_without_an_id_passes_as_the_shard_spelt_it():
    body = b'{"data": [ {"k" : 1.50, "t": "\\u00e9\\n"} , {"id": 7, "k": 2} ]}'
    doc, _, raw = run(True, [body], {}, False, 0)
    assert raw.startswith(b'{"data":[{"k" : 1.50, "t": "\\u00e9\\n"},{"id":"s0~i7","k":2}]')
    assert doc["data"][0]["k"] == Decimal("1.50")


def test_the_field_reader_reads_what_a_dotted_lookup_reads():
    read = split.field_reader(DottedPath.parse("p.q"))
    for value in ({"p": {"q": 1}}, {"p": {"q": None}}, {"p": []}, {"p": 1}, {}, [], 3, "x",
                  {"p": {"q": {"r": [1, 2.5]}}}, {"p": {"q": 10**40}}):
        assert read(json.dumps(value).encode()) == DottedPath.parse("p.q").lookup(
            loads(json.dumps(value)))


def test_an_id_spelt_with_escapes_is_still_rewritten():
    rewrite = ids.raw_globalizer([DottedPath.parse("id")])
    assert loads(rewrite(b'{"\\u0069d": 5}', "eu")) == {"id": "eu~i5"}
    assert loads(rewrite(b'{"i\\u0064": 5}', "eu")) == {"id": "eu~i5"}
    assert loads(rewrite(b'{"\\u0049\\u0044": 5, "id": 6}', "eu")) == {"ID": 5, "id": "eu~i6"}
    assert rewrite(b'{"name": "\\u00e9\\"", "n": 5}', "eu") == b'{"name": "\\u00e9\\"", "n": 5}'
    assert ids._escapes_of("a/").search(b"\\/") and not ids._escapes_of("a/").search(b"/")


def test_ndjson_lines_of_an_indented_item_are_one_line():
    enc = NDJSONEncoder(raw=True)
    assert enc.items([b'{\n  "a": [\r\n1]\n}', b'2']) == b'{   "a": [  1] }\n2\n'
