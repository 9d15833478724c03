"""Encode merged items and the closing meta into the client's format.

Sans-IO: items in, bytes out. ``JSONListEncoder`` writes one document,
``{"data":[...],"meta":{...}}``, meta last; ``NDJSONEncoder`` writes one item
per line and, always as the last line, ``{"meta":{...}}``.

Items are parsed values, or with ``raw=True`` the exact bytes of items the
native splitter cut out of a shard's body (already valid JSON): those are
joined, never decoded. Numbers and strings then keep the shard's own bytes.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import json

import orjson

_MAX_I64 = 2**63 - 1
_MIN_I64 = -(2**63)


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return orjson.Fragment(str(obj))
    raise TypeError(f"cannot encode {type(obj).__name__}")


def _exact(obj: Any) -> Any:
    """Copy of obj with integers beyond 64 bits as raw fragments (orjson refuses them)."""
    if isinstance(obj, dict):
        return {k: _exact(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_exact(v) for v in obj]
    if isinstance(obj, int) and not isinstance(obj, bool):
        if obj > _MAX_I64 or obj < _MIN_I64:
            return orjson.Fragment(str(obj))
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(body: bytes | str) -> Any:
    """Strict JSON with exact numbers (big ints stay ints, decimals stay Decimal)."""
    return json.loads(body, parse_float=Decimal, parse_constant=_no_constant)


def encode_value(value: Any) -> bytes:
    """Compact JSON for a parsed value, numbers digit for digit as the shard sent them."""
    try:
        return orjson.dumps(value, default=_default)
    except orjson.JSONEncodeError:
        return orjson.dumps(_exact(value), default=_default)


class _Encoder:
    __slots__ = ("raw",)

    def __init__(self, raw: bool = False) -> None:
        self.raw = raw  # items are JSON bytes already

    def check(self, item: Any) -> None:
        """Raise if an item cannot be encoded (without changing the encoder's state)."""
        if not self.raw:
            encode_value(item)


class JSONListEncoder(_Encoder):
    content_type = b"application/json"

    __slots__ = ("_first",)

    def __init__(self, raw: bool = False) -> None:
        super().__init__(raw)
        self._first = True

    def begin(self) -> bytes:
        return b'{"data":['

    def items(self, items: list[Any]) -> bytes:
        if self.raw:
            body = b",".join(items)
        else:
            body = self._encoded(items)
        if self._first:
            self._first = False
            return body
        return b"," + body

    @staticmethod
    def _encoded(items: list[Any]) -> bytes:
        try:
            return encode_value(items)[1:-1]  # one call for the batch
        except TypeError:  # orjson's errors; the list's own level can pass its depth limit
            return b",".join([encode_value(i) for i in items])  # raises before any change

    def end(self, meta: dict[str, Any]) -> bytes:
        return b'],"meta":' + encode_value(meta) + b"}"


class NDJSONEncoder(_Encoder):
    content_type = b"application/x-ndjson"

    __slots__ = ()

    def begin(self) -> bytes:
        return b""

    def items(self, items: list[Any]) -> bytes:
        if self.raw:
            return b"\n".join([_one_line(i) for i in items]) + b"\n"
        return b"\n".join([encode_value(i) for i in items]) + b"\n"

    def end(self, meta: dict[str, Any]) -> bytes:
        return b'{"meta":' + encode_value(meta) + b"}\n"


def _one_line(item: bytes) -> bytes:
    """An item's bytes on one line. A raw line break can only be whitespace
    between tokens (JSON strings cannot hold one), so a space replaces it."""
    if b"\n" in item or b"\r" in item:
        return item.replace(b"\n", b" ").replace(b"\r", b" ")
    return item


def encoder_for(accept: str | None, raw: bool = False) -> JSONListEncoder | NDJSONEncoder:
    """Pick the output format from the client's Accept header; ``raw``: the
    items will be JSON bytes (the native splitter's)."""
    if accept and ("application/x-ndjson" in accept or "application/jsonl" in accept):
        return NDJSONEncoder(raw)
    return JSONListEncoder(raw)
