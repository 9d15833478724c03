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
