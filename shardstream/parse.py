"""Turn a shard's body bytes into list items as soon as each one completes.

Sans-IO: feed it bytes, it returns items. Numbers keep their exact value:
integers stay ``int`` (any size) and decimals ``Decimal``; the encoder writes
both back digit for digit.
"""

from __future__ import annotations

from typing import Any

import ijson

BACKEND = ijson.backend
FAST_BACKEND = "yajl2_c"


class ParseError(Exception):
    code = "malformed_json"


class Truncated(ParseError):
    code = "truncated"


class ItemParser:
    """Incremental parser for the items under one ijson prefix (e.g. ``data.item``).

    With ``total`` (a dotted path such as ``meta.total``) it also picks up the
    shard's total count, wherever in the document it stands.
    """

    __slots__ = ("_out", "_coro", "_total_out", "_total_coro", "total")

    def __init__(self, prefix: str, total: str | None = None) -> None:
        self._out: list[Any] = ijson.sendable_list()
        self._coro = ijson.items_coro(self._out, prefix, use_float=False)
        self.total: int | None = None
        self._total_coro = None
        if total:
            self._total_out: list[Any] = ijson.sendable_list()
            self._total_coro = ijson.items_coro(self._total_out, total, use_float=False)

    def _feed_total(self, data: bytes) -> None:
        # Errors surface from the item coroutine, which sees the same bytes.
        try:
            self._total_coro.send(data)
        except ijson.JSONError:
            self._total_coro = None
            return
        out = self._total_out
        if out:
            value = out[0]
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                self.total = value
            self._total_coro = None

    def _take(self) -> list[Any]:
        out = self._out
        if not out:
            return []
        items = list(out)
        del out[:]
        return items

    def feed(self, data: bytes) -> list[Any]:
        """Parse a chunk; return the items it completed (possibly none)."""
        try:
            self._coro.send(data)
        except ijson.JSONError as e:
            raise ParseError(f"malformed JSON: {e}") from None
        if self._total_coro is not None:
            self._feed_total(data)
        return self._take()

    def close(self) -> list[Any]:
        """End of body: return the last items, or raise if the document is cut short."""
        try:
            self._coro.close()
        except ijson.IncompleteJSONError as e:
            raise Truncated(f"body ended before the JSON document did: {e}") from None
        except ijson.JSONError as e:
            raise ParseError(f"malformed JSON: {e}") from None
        return self._take()
