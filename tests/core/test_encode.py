"""The encoders: items in, the client's bytes out, numbers digit for digit."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardstream.core.encode import JSONListEncoder, NDJSONEncoder, encode_value, encoder_for
from shardstream.core.parse import ItemParser


def feed_in_chunks(parser: ItemParser, data: bytes, size: int) -> list:
    out = []
    for i in range(0, len(data), size):
        out += parser.feed(data[i : i + size])
    return out + parser.close()


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
