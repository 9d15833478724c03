"""The native item splitter against ItemParser: same items, same errors.

Long run: SHARDSTREAM_SPLIT_EXAMPLES=20000 pytest tests/core/test_split.py
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardstream.core import split
from shardstream.core.parse import UNREPRESENTABLE, ItemParser, ParseError

pytestmark = pytest.mark.skipif(not split.NATIVE, reason="shardstream.core._splitter is not "
                                "built (pip install -e . with a C compiler)")

EXAMPLES = int(os.environ.get("SHARDSTREAM_SPLIT_EXAMPLES", "60"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(autouse=True, scope="module")
def _any_int_length():
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)  # what parse.prepare() does in the gateway
    yield
    sys.set_int_max_str_digits(old)


# ---- running both ----

def run(cls: Any, doc: bytes, cuts: list[int], prefix: str, total: str | None) -> tuple:
    """(outcome, items per feed call, error items, total); outcome is "ok" or the code."""
    p = cls(prefix, total)
    RUNS.append(p)
    per_feed: list[list] = []
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(doc)}), len(doc)]
    try:
        for a, b in itertools.pairwise(bounds):
            if b > a:
                per_feed.append(p.feed(doc[a:b]))
        per_feed.append(p.close())
    except ParseError as e:
        if str(e) == UNREPRESENTABLE:  # ItemParser only: Decimal's exponent range
            return "number", per_feed, e.items, p.total
        return e.code, per_feed, e.items, p.total
    except UnicodeDecodeError:  # ItemParser only: yajl passes what Python can't decode
        return "unicode", per_feed, None, p.total
    return "ok", per_feed, None, p.total


RUNS: list[Any] = []


def loads(span: bytes) -> Any:
    return json.loads(span, parse_float=Decimal)


class _Any:
    """Equal to anything: yajl decodes a lone high surrogate escape as "?" (and
    pairs it with whatever \\u follows), which json.loads does not; the
    splitter passes the bytes through, so only the spans' number counts."""

    def __eq__(self, other: object) -> bool:
        return True


HIGH_SURROGATE = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])")


def check(doc: bytes, cuts: list[int], prefix: str = "data.item",
          total: str | None = "meta.total") -> tuple:
    ref = run(ItemParser, doc, cuts, prefix, total)
    got = run(split.ItemSplitter, doc, cuts, prefix, total)
    splitter = RUNS.pop()._s
    RUNS.clear()
    global loads
    strict_loads = loads
    if HIGH_SURROGATE.search(doc):
        loads = lambda span: _Any()
    try:
        return _compare(doc, cuts, ref, got, splitter)
    finally:
        loads = strict_loads


def _compare(doc: bytes, cuts: list[int], ref: tuple, got: tuple, splitter: Any) -> tuple:
    # every span is the input's own bytes, in order
    pos = 0
    for span in [s for feed in got[1] for s in feed] + list(got[2] or []):
        assert isinstance(span, bytes)
        at = doc.find(span, pos)
        assert at >= 0, span
        pos = at + len(span)
    if ref[0] == "number":  # valid JSON that only ItemParser cannot hold: spans pass
        return got
    if ref[0] == "unicode":
        assert got[0] == "malformed_json"
        return got
    if got[0] == "malformed_json" and splitter.done:
        # yajl only lexes one token after the document, and lets it pass if the
        # token is unfinished ('{"data":[]}"x', or "1 2" cut after the 2), so it may fail later or not at all: the
        # splitter refuses all trailing garbage. Everything before must agree.
        got_items = [loads(s) for f in got[1] for s in f] + [loads(s) for s in got[2]]
        assert got_items == [i for f in ref[1] for i in f] + list(ref[2] or []), (doc, cuts)
        return got
    assert got[0] == ref[0], (doc, cuts, ref, got)
    assert [[loads(s) for s in f] for f in got[1]] == ref[1], (doc, cuts)
    if ref[2] is not None:
        assert [loads(s) for s in got[2]] == ref[2], (doc, cuts)
    assert got[3] == ref[3], (doc, cuts)
    return got


# ---- documents as text, so that whitespace, escapes and number spellings vary ----

WS = st.sampled_from(["", "", "", " ", "\n", "\t", "\r\n  ", "  "])
KEYS = st.sampled_from(["data", "meta", "total", "item", "", "id", "data.item", "x", "é", "d\\u0061ta",
                        "😀"])
ESCAPES = st.sampled_from(['\\"', "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t", "\\u0041",
                           "\\u00e9", "\\u2028", "\\ud83d\\ude00", "\\uD834\\uDD1E", "\\u0000",
                           "\\uFFFF"])
CHARS = st.one_of(st.characters(blacklist_categories=("Cs",), blacklist_characters='"\\',
                                min_codepoint=0x20), ESCAPES)
STRINGS = st.lists(CHARS, max_size=12).map(lambda cs: '"' + "".join(cs) + '"')


@st.composite
def numbers(draw: Any) -> str:
    sign = draw(st.sampled_from(["", "", "-"]))
    intpart = draw(st.one_of(st.just("0"), st.integers(1, 10**30).map(str),
                             st.integers(10**300, 10**320).map(str)))
    frac = draw(st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=40).map(
        lambda d: "." + d)))
    exp = draw(st.one_of(st.just(""), st.tuples(st.sampled_from("eE"), st.sampled_from(["", "+", "-"]),
                                                st.text("0123456789", min_size=1, max_size=3)
                                                ).map("".join)))
    return sign + intpart + frac + exp


SCALARS = st.one_of(STRINGS, numbers(), st.sampled_from(["true", "false", "null"]))


def _container(children: Any) -> Any:
    arrays = st.tuples(st.lists(st.tuples(WS, children, WS), max_size=4), WS).map(
        lambda t: "[" + (",".join(a + v + b for a, v, b in t[0]) or t[1]) + "]")
    objects = st.tuples(st.lists(st.tuples(WS, KEYS, WS, WS, children, WS), max_size=4), WS).map(
        lambda t: "{" + (",".join(f'{a}"{k}"{b}:{c}{v}{d}' for a, k, b, c, v, d in t[0]) or t[1])
        + "}")
    return st.one_of(arrays, objects)


VALUES = st.recursive(SCALARS, _container, max_leaves=12)


@st.composite
def bodies(draw: Any) -> str:
    items = draw(st.lists(st.tuples(WS, VALUES, WS), max_size=8))
    arr = "[" + (",".join(a + v + b for a, v, b in items) or draw(WS)) + "]"
    if draw(st.integers(0, 9)) == 0:
        return draw(WS) + arr + draw(WS)  # bare array (prefix "item")
    total = draw(st.one_of(st.integers(0, 10**25).map(str), numbers(), SCALARS, VALUES))
    members = [("data", arr), ("meta", "{" + f'"total":{total}' + "}")]
    members += draw(st.lists(st.tuples(KEYS, VALUES), max_size=3))
    members = draw(st.permutations(members))
    if draw(st.integers(0, 5)) == 0:
        members = [m for m in members if m[0] != "data" or draw(st.booleans())]
    ws = [draw(WS) for _ in range(4)]
    return (ws[0] + "{" + ",".join(f'{ws[1]}"{k}"{ws[2]}:{ws[3]}{v}' for k, v in members)
            + "}" + draw(WS))


def chunking(doc: bytes, draw: Any) -> list[int]:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return list(range(1, len(doc)))  # one byte at a time
    if kind == 1:
        return []
    return draw(st.lists(st.integers(0, max(0, len(doc))), max_size=12))


def prefix_for(doc: bytes) -> str:
    return "item" if doc.lstrip().startswith(b"[") else "data.item"


@SETTINGS
@given(st.data())
def test_valid_bodies_split_like_itemparser(data: Any) -> None:
    doc = data.draw(bodies()).encode()
    check(doc, chunking(doc, data.draw), prefix_for(doc))


@SETTINGS
@given(st.data())
def test_mutated_bodies_fail_like_itemparser(data: Any) -> None:
    doc = bytearray(data.draw(bodies()).encode())
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.integers(0, 2))
        at = data.draw(st.integers(0, len(doc)))
        if op == 0 and at < len(doc):
            doc[at] = data.draw(st.one_of(st.integers(0, 255), st.sampled_from(b'{}[],:"\\-0.eE \x00')))
        elif op == 1:
            doc[at:at] = data.draw(st.binary(min_size=1, max_size=3) | st.sampled_from(
                [b",", b"]", b"}", b"\\", b'"', b"\xc3", b"\xed\xa0\x80", b"\xc0\x80", b"00", b"-",
                 b"\\u", b"\\ud800", b"\\udc00", b"tru", b"1.", b"1e", b" x"]))
        else:
            del doc[at : at + data.draw(st.integers(1, 3))]
    doc = bytes(doc)
    check(doc, chunking(doc, data.draw), prefix_for(doc))


@SETTINGS
@given(st.data())
def test_truncations_fail_like_itemparser(data: Any) -> None:
    doc = data.draw(bodies()).encode()[:80]
    cuts = chunking(doc, data.draw)
    for end in range(len(doc) + 1):
        check(doc[:end], cuts, prefix_for(doc))


# ---- plain cases ----

DOC = (b'{"meta":{"total":3},"data":[ {"id":1,"t":"a]}"} ,\n{"id":2,"n":[1,{"x":null}]},'
       b'{"id": 3}],"z":1}')


@pytest.mark.parametrize("size", [1, 2, 7, 64, 10_000])
def test_spans_are_exact_whatever_the_chunking(size: int) -> None:
    s = split.ItemSplitter("data.item", "meta.total")
    out = []
    for i in range(0, len(DOC), size):
        out += s.feed(DOC[i : i + size])
    out += s.close()
    assert out == [b'{"id":1,"t":"a]}"}', b'{"id":2,"n":[1,{"x":null}]}', b'{"id": 3}']
    assert s.total == 3


@pytest.mark.parametrize("doc,cuts", [
    (b'{"data":[1,2', []), (b'{"data":[1,-', []), (b'{"data":[tr', []), (b"", []), (b"  ", []),
    (b'{"data":["\xc3', []), (b'{"data":[01]}', []), (b'{"data":[1]} x', []), (b'{"data":[1]}{}', []),
    (b'{"data":{"item":5}}', []), (b'{"":[1,2]}', []), (b'{"data":5}', []), (b'{"data":[]}', []),
    (b'{"data":[1],"data":[2]}', []), (b'{"data.item":7}', []), (b'{"":{"data":[3]}}', []),
    (b'{"data":[1,]}', []), (b'{"data":[1e5, 1.50, -0, 1E+2]}', [3, 12]), (b'{"data":["\x01"]}', []),
    (b'\x0b{"data":[1]}\x0c', []), (b'{"data":["\\ud800", "\\ud800\\u0041", "\\ud800\\n"]}', [13, 14]),
    (b'{"d\\u0061ta":[1]}', [4, 5, 6]), (b'{"data":[{"a":"\xf0\x9f\x98\x80"}]}', [15, 16, 17]),
    (b'{"meta":{"total":-0},"data":[]}', []), (b'{"meta":{"total":-1},"data":[]}', []),
    (b'{"meta":{"total":1.0},"data":[]}', []),
    (b'{"meta":{"total":"3"},"meta":{"total":4},"data":[]}', []),
    (b'{"data":[],"meta":{"total":12', [27]), (b'{"data":[5]}', [10, 11]),
])
def test_tricky_cases(doc: bytes, cuts: list[int]) -> None:
    prefix = "item" if doc.startswith(b"{\"\":[") else "data.item"
    check(doc, cuts, prefix)


@pytest.mark.parametrize("bad", [b'"\xed\xa0\x80"', b'"\xc0\x80"', b'"\xf5\x80\x80\x80"',
                                 b'"\\udc00"', b'"\xe0\x80\x80"'])
def test_what_itemparser_cannot_decode_is_malformed(bad: bytes) -> None:
    s = split.ItemSplitter("data.item")
    assert s.feed(b'{"data":[') == []
    with pytest.raises(ParseError) as e:
        s.feed(b"1," + bad + b"]}")
    assert e.value.code == "malformed_json" and e.value.items == [b"1"]


def test_deep_nesting_limit() -> None:
    s = split.ItemSplitter("item", max_depth=50)
    assert s.feed(b"[" + b"[" * 48 + b"]" * 48 + b"]") == [b"[" * 48 + b"]" * 48]
    s = split.ItemSplitter("item", max_depth=50)
    with pytest.raises(ParseError):
        s.feed(b"[" * 51)


def test_only_the_unfinished_item_is_buffered() -> None:
    s = split.ItemSplitter("data.item")
    s.feed(b'{"skip":"' + b"x" * 100_000 + b'","data":[{"a":"')
    assert s._s.buffered == 6
    assert s.feed(b'b"}]}') == [b'{"a":"b"}']
    assert s._s.buffered == 0


def test_no_list_after_64k_without_items() -> None:
    doc = b'{"pad":"' + b"x" * 70_000 + b'","data":[]}'
    check(doc, [1000, 65536])


@settings(max_examples=int(os.environ.get("SHARDSTREAM_SPLIT_EXAMPLES", "200")), deadline=None)
@given(st.binary(max_size=300) | st.builds(
    lambda head, body: head + body, st.binary(min_size=1, max_size=1),
    st.sampled_from([b'{"data": [1, {"a": [2, "x"]}, 3], "meta": {"total": 3}}',
                     b'[{"k": 1.5e3}, "\\u00e9", null]', b'{"a": {"b": [true, false]}}'])))
def test_the_fuzz_target_holds_on_random_inputs(data: bytes) -> None:
    """tests/fuzz/split_atheris.py's check, on what hypothesis makes (the
    engine itself runs by hand: see that file)."""
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "fuzz", "split_atheris.py")
    spec = importlib.util.spec_from_file_location("split_atheris", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.check(data)


@pytest.mark.parametrize("size", [1, 3, 100])
def test_vertical_tab_and_form_feed_leave_as_spaces(size: int) -> None:
    """yajl skips \\v and \\f as whitespace; JSON does not (RFC 8259), so an
    item passed through must not carry them (found by the atheris target)."""
    doc = b'{"data": [{"id":\x0b1,\x0c"t": "x"}, \x0b[2]]}'
    s = split.ItemSplitter("data.item")
    got = [item for i in range(0, len(doc), size) for item in s.feed(doc[i:i + size])]
    got += s.close()
    assert got == [b'{"id": 1, "t": "x"}', b'[2]']
    assert [json.loads(item) for item in got] == [{"id": 1, "t": "x"}, [2]]
