"""The sans-IO core: parser, merge, encoders and the scatter state, fed directly."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardstream.encode import JSONListEncoder, NDJSONEncoder, encode_value, encoder_for
from shardstream.errors import ShardError
from shardstream.merge import InterleavedMerge
from shardstream.parse import ItemParser, ParseError, Truncated
from shardstream.scatter import Scatter

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


@pytest.mark.parametrize(
    "text",
    ["0.1000000000000000055511151231257827", "1E+400", "-0.0", "123456789012345678901234567890",
     "-98765432109876543210", "1.50", "3", "2.5e-7"],
)
def test_numbers_are_encoded_digit_for_digit(text):
    (item,) = ItemParser("item").feed(b"[{\"v\":" + text.encode() + b"}]")
    out = encode_value(item)
    assert json.loads(out, parse_float=Decimal) == json.loads('{"v":' + text + "}", parse_float=Decimal)
    assert Decimal(out[5:-1].decode()) == Decimal(text)


@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.text()
    | st.decimals(allow_nan=False, allow_infinity=False),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4),
    max_leaves=20,
))
@settings(max_examples=200, deadline=None)
def test_parse_then_encode_round_trips_any_json(value):
    text = b"[" + encode_value(value) + b"]"
    expected = json.loads(text, parse_float=Decimal)
    (item,) = feed_in_chunks(ItemParser("item"), text, 5)
    assert json.loads(b"[" + encode_value(item) + b"]", parse_float=Decimal) == expected


def test_interleaved_merge_hands_out_batches_in_arrival_order():
    m = InterleavedMerge(2)
    m.push(1, ["b1"])
    m.push(0, ["a1", "a2"])
    m.push(0, [])
    assert m.pop() == [(1, ["b1"]), (0, ["a1", "a2"])]
    assert m.pop() == []


def test_json_encoder_writes_one_document_meta_last():
    e = JSONListEncoder()
    out = e.begin() + e.items([{"a": 1}]) + e.items([{"a": 2}, {"a": 3}]) + e.end({"m": 1})
    assert json.loads(out) == {"data": [{"a": 1}, {"a": 2}, {"a": 3}], "meta": {"m": 1}}
    assert out.endswith(b'"meta":{"m":1}}')


def test_ndjson_encoder_ends_with_the_meta_line():
    e = NDJSONEncoder()
    out = e.begin() + e.items([{"a": 1}, {"a": 2}]) + e.end({"m": 1})
    assert out.decode().splitlines() == ['{"a":1}', '{"a":2}', '{"meta":{"m":1}}']


def test_encoder_is_chosen_by_accept():
    assert isinstance(encoder_for("application/x-ndjson"), NDJSONEncoder)
    assert isinstance(encoder_for("application/json, */*"), JSONListEncoder)
    assert isinstance(encoder_for(None), JSONListEncoder)


def body(n, shard):
    return json.dumps({"data": [{"s": shard, "i": i} for i in range(n)], "meta": {"total": n}}).encode()


def test_scatter_streams_items_as_they_arrive_and_closes_with_meta():
    sc = Scatter(["a", "b"], "data.item", JSONListEncoder())
    assert not sc.ready() and sc.take() == b""
    b = body(3, "a")
    assert sc.feed(0, b[:30])
    first = sc.take()
    assert first.startswith(b'{"data":[{"s":"a","i":0}')
    assert sc.feed(0, b[30:])
    sc.end(0)
    assert not sc.done
    sc.fail(1, ShardError("idle_timeout", "no body data for 1 s"))
    assert sc.done and sc.ready()
    doc = json.loads(first + sc.take())
    assert [x["i"] for x in doc["data"]] == [0, 1, 2]
    assert doc["meta"]["shards"] == {
        "total": 2, "succeeded": 1,
        "failed": [{"shard": "b", "error": "idle_timeout", "message": "no body data for 1 s",
                    "status": None, "attempts": 1, "items_delivered": 0}],
    }
    assert sc.closed and sc.take() == b""


def test_scatter_counts_items_delivered_before_a_shard_failed():
    sc = Scatter(["a"], "data.item", JSONListEncoder())
    b = body(10, "a")
    cut = b.index(b'"i": 4}') + 7
    assert sc.feed(0, b[:cut])
    assert not sc.feed(0, b"garbage")
    assert not sc.is_open(0)
    doc = json.loads(sc.take())
    assert len(doc["data"]) == 5
    (f,) = doc["meta"]["shards"]["failed"]
    assert (f["error"], f["items_delivered"]) == ("malformed_json", 5)


def test_scatter_truncated_body_fails_at_end():
    sc = Scatter(["a"], "data.item", JSONListEncoder())
    b = body(4, "a")
    sc.feed(0, b[: len(b) // 2])
    sc.end(0)
    assert sc.all_failed
    assert sc.failures[0].code == "truncated"


def test_scatter_ignores_events_after_a_shard_ended():
    sc = Scatter(["a"], "data.item", JSONListEncoder())
    sc.feed(0, body(1, "a"))
    sc.end(0)
    assert not sc.feed(0, b"more")
    sc.fail(0, ShardError("x", "y"))
    assert json.loads(sc.take())["meta"]["shards"]["failed"] == []


def test_scatter_with_no_items_at_all_is_still_a_document():
    sc = Scatter(["a", "b"], "data.item", NDJSONEncoder())
    sc.feed(0, b'{"data":[]}')
    sc.end(0)
    sc.feed(1, b'{"data":[]}')
    sc.end(1)
    assert sc.take() == b'{"meta":{"shards":{"total":2,"succeeded":2,"failed":[]}}}\n'


def test_a_trailing_newline_is_never_part_of_a_valid_token():
    """``$`` matches before a final newline; ids, paths, limits and names must not."""
    from shardstream import config, ids, paging
    from shardstream.routing import NotFound, Router

    assert ids.encode("eu", "0\n") != "eu~r0\n" and ids.decode(ids.encode("eu", "0\n")) == ("eu", "0\n")
    for bad in ("eu~i5\n", "eu~rab\n", "eu~bYWI\n"):
        with pytest.raises(ids.BadGlobalId):
            ids.decode(bad)
    with pytest.raises(paging.BadListQuery):
        paging._count("5\n", "limit", 1)
    with pytest.raises(config.ConfigError):
        config.parse({"shards": {"a\n": {"urls": ["http://127.0.0.1:1"]}},
                      "routes": [{"path": "/x", "mode": "scatter", "items": "item"}]})
    router = Router(config.parse({"shards": {"a": {"urls": ["http://127.0.0.1:1"]}},
                                  "routes": [{"path": "/x", "mode": "scatter", "items": "item"}]}))
    with pytest.raises(NotFound):
        router.match("GET", "/x\n")


def _nest(depth):
    x = 1
    for _ in range(depth - 1):
        x = {"a": x}
    return {"id": 1, "a": x}  # `depth` containers in all


def test_an_item_as_deep_as_orjson_allows_is_delivered_in_a_batch_and_nothing_is_lost():
    """orjson's depth limit counts the batch's own list: an item that encodes
    alone must not fail, or take other shards' items down with it."""
    from shardstream.merge import OrderedMerge

    deep = _nest(254)
    deep["k"] = 3
    sc = Scatter(["a", "b"], "data.item", JSONListEncoder(), OrderedMerge(2, key=lambda i: i["k"]))
    sc.feed(0, json.dumps({"data": [{"k": 4}, {"k": 5}]}).encode())
    sc.feed(1, json.dumps({"data": [{"k": 2}, deep, {"k": 6}]}).encode())
    sc.end(0)
    sc.end(1)
    doc = json.loads(sc.take())
    assert [i["k"] for i in doc["data"]] == [2, 3, 4, 5, 6]
    assert doc["meta"]["shards"]["failed"] == []
