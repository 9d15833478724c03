"""The incremental parser: body chunks in, complete items out."""

from __future__ import annotations

import pytest

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
