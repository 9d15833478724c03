"""The incremental parser: body chunks in, complete items out."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardstream.core.parse import ItemParser, ParseError, Truncated


DOC = b'{"meta":{"total":3},"data":[{"id":1,"t":"a]}"},{"id":2,"n":[1,{"x":null}]},{"id":3}],"z":1}'


def feed_in_chunks(parser: ItemParser, data: bytes, size: int) -> list:
    out = []
    for i in range(0, len(data), size):
        out += parser.feed(data[i : i + size])
    return out + parser.close()


@pytest.mark.parametrize("size", [1, 2, 7, 64, 10_000])
def test_parser_yields_items_whatever_the_chunking(size):
    items = feed_in_chunks(ItemParser("data.item"), DOC, size)
    assert [i["id"] for i in items] == [1, 2, 3]
    assert items[0]["t"] == "a]}"


def test_parser_yields_an_item_in_the_chunk_that_closes_it():
    p = ItemParser("data.item")
    assert p.feed(b'{"data":[{"id":1}') == [{"id": 1}]
    assert p.feed(b',{"id":2') == []
    assert p.feed(b"}") == [{"id": 2}]


def test_parser_reports_truncation_at_close():
    p = ItemParser("data.item")
    assert p.feed(b'{"data":[{"id":1},{"id"') == [{"id": 1}]
    with pytest.raises(Truncated):
        p.close()


def test_parser_reports_malformed_json_at_once():
    p = ItemParser("data.item")
    with pytest.raises(ParseError) as e:
        p.feed(b'{"data":[{"id":1},{not json')
    assert e.value.code == "malformed_json"


def test_parser_of_an_empty_body_is_truncated():
    with pytest.raises(ParseError):
        ItemParser("data.item").close()


def test_bare_array_prefix():
    assert feed_in_chunks(ItemParser("item"), b'[{"a":1},{"a":2}]', 3) == [{"a": 1}, {"a": 2}]


@pytest.mark.parametrize("bad", [b'"\xc0\xaf"', b'"\xed\xa0\x80"', b'"\xf4\x90\x80\x80"',
                                 b'"\\udc00"'])
def test_strings_yajl_passes_but_python_cannot_decode_are_malformed_not_a_crash(bad):
    """Found by the native splitter's differential tests: overlong UTF-8,
    encoded surrogates, code points above U+10FFFF and a lone low surrogate
    escape leaked UnicodeDecodeError (an internal error for the shard)."""
    p = ItemParser("data.item", "meta.total")
    with pytest.raises(ParseError) as e:
        p.feed(b'{"data":[{"id":1},{"t":' + bad + b'}],"meta":{"total":2}}')
        p.close()
    assert e.value.code == "malformed_json" and e.value.items in ([{"id": 1}], [])


def test_an_empty_chunk_is_not_the_end_of_the_body():
    p = ItemParser("data.item")
    assert p.feed(b"") == [] and p.feed(b'{"data":[1,') == [1] and p.feed(b"") == []
    assert p.feed(b"2]}") == [2] and p.close() == []


def test_a_number_past_decimals_exponent_range_is_a_parse_error_not_a_crash():
    """Found by the splitter's long differential run: decimal.InvalidOperation leaked."""
    p = ItemParser("data.item", "meta.total")
    with pytest.raises(ParseError) as e:
        p.feed(b'{"data":[1,1.5e99999999999999999999]}')
    assert e.value.code == "malformed_json" and e.value.items == [1]


def test_nesting_past_the_limit_is_malformed_at_once_in_both_parsers() -> None:
    """ijson has no limit, and what it keeps grows with the depth squared: 30 KB
    of brackets cost the gateway 2 GB. Both parsers stop at the same level,
    after the items before it, however the body is cut."""
    from shardstream.core import split

    deep = b'{"data":[1,' + b"[" * 30_000
    parsers = [ItemParser] + ([split.ItemSplitter] if split.NATIVE else [])
    for make in parsers:
        for cut in (len(deep), 7, 5000):
            p = make("data.item")
            items: list = []
            with pytest.raises(ParseError) as e:
                for i in range(0, len(deep), cut):
                    items += p.feed(deep[i:i + cut])
            assert e.value.code == "malformed_json" and "nesting too deep" in str(e.value)
            assert items + e.value.items in ([1], [b"1"]), (make, cut)
        ok = b'{"data":[' + b"[" * 510 + b"]" * 510 + b"]}"  # 512 levels with the two above
        p = make("data.item")
        assert len(p.feed(ok) + p.close()) == 1, make
        p = make("data.item")
        with pytest.raises(ParseError):
            p.feed(b'{"data":[' + b"[" * 511)


def test_brackets_in_strings_and_escapes_do_not_count_as_nesting() -> None:
    body = b'{"data":["' + b"[" * 600 + b'\\"[{", {"a":"\\\\"}, "' + b"]" * 600 + b'"]}'
    for cut in (len(body), 1, 2, 3):
        p = ItemParser("data.item", max_depth=3)
        items = []
        for i in range(0, len(body), cut):
            items += p.feed(body[i:i + cut])
        items += p.close()
        assert items == ["[" * 600 + '"[{', {"a": "\\"}, "]" * 600], cut


def _walk_depths(body: bytes) -> list[int]:
    """The reference: the depth after every byte, by a plain byte walk."""
    out, depth, in_string, escaped = [], 0, False, False
    for c in body:
        if in_string:
            if escaped:
                escaped = False
            elif c == 0x5C:
                escaped = True
            elif c == 0x22:
                in_string = False
        elif c == 0x22:
            in_string = True
        elif c in b"[{":
            depth += 1
        elif c in b"]}":
            depth -= 1
        out.append(depth)
    return out


_json_values = st.recursive(
    st.none() | st.integers() | st.text(alphabet='[]{}"\\ab\u00e9', max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.text(alphabet='[]{}"\\k', max_size=4), inner, max_size=4),
    max_leaves=30)


@given(_json_values, st.lists(st.integers(1, 40), max_size=30))
@settings(max_examples=300, deadline=None)
def test_the_depth_count_agrees_with_a_byte_walk_however_the_body_is_cut(doc, cuts) -> None:
    from shardstream.core.parse import _Depth

    body = json.dumps({"data": [doc]}).encode()
    reference = _walk_depths(body)
    d = _Depth(10_000)
    pos = 0
    for cut in cuts + [len(body)]:
        chunk = body[pos:pos + cut]
        if not chunk:
            break
        assert d.feed(chunk) == -1
        pos += len(chunk)
        assert d.depth == reference[pos - 1], (body, pos)
    limit = max(reference) - 1
    if limit >= 1:  # the first bracket past a lower limit is found, however cut
        first = next(i for i, v in enumerate(reference) if v > limit)
        d, pos, found = _Depth(limit), 0, -1
        for cut in cuts + [len(body)]:
            chunk = body[pos:pos + cut]
            at = d.feed(chunk) if chunk else -1
            if at >= 0:
                found = pos + at
                break
            pos += len(chunk)
        assert found == first, body
