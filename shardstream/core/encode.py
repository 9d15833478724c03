"""Encode merged items and the closing meta into the client's format.

Sans-IO: items in, bytes out. ``JSONListEncoder`` writes one document,
``{"data":[...],"meta":{...}}``, meta last; ``NDJSONEncoder`` writes one item
per line and, always as the last line, ``{"meta":{...}}``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

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


def encode_value(value: Any) -> bytes:
    """Compact JSON for a parsed value, numbers digit for digit as the shard sent them."""
    try:
        return orjson.dumps(value, default=_default)
    except orjson.JSONEncodeError:
        return orjson.dumps(_exact(value), default=_default)


class _Encoder:
    __slots__ = ()

    @staticmethod
    def check(item: Any) -> None:
        """Raise if an item cannot be encoded (without changing the encoder's state)."""
        encode_value(item)


class JSONListEncoder(_Encoder):
    content_type = b"application/json"

    __slots__ = ("_first",)

    def __init__(self) -> None:
        self._first = True

    def begin(self) -> bytes:
        return b'{"data":['

    def items(self, items: list[Any]) -> bytes:
        try:
            body = encode_value(items)[1:-1]  # one call for the batch
        except TypeError:  # orjson's errors; the list's own level can pass its depth limit
            body = b",".join([encode_value(i) for i in items])  # raises before any change
        if self._first:
            self._first = False
            return body
        return b"," + body

    def end(self, meta: dict[str, Any]) -> bytes:
        return b'],"meta":' + encode_value(meta) + b"}"


class NDJSONEncoder(_Encoder):
    content_type = b"application/x-ndjson"

    __slots__ = ()

    def begin(self) -> bytes:
        return b""

    def items(self, items: list[Any]) -> bytes:
        return b"\n".join([encode_value(i) for i in items]) + b"\n"

    def end(self, meta: dict[str, Any]) -> bytes:
        return b'{"meta":' + encode_value(meta) + b"}\n"


def encoder_for(accept: str | None) -> JSONListEncoder | NDJSONEncoder:
    """Pick the output format from the client's Accept header."""
    if accept and ("application/x-ndjson" in accept or "application/jsonl" in accept):
        return NDJSONEncoder()
    return JSONListEncoder()
