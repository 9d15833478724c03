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
    """Incremental parser for the items under one ijson prefix (e.g. ``data.item``)."""

    __slots__ = ("_out", "_coro")

    def __init__(self, prefix: str) -> None:
        self._out: list[Any] = ijson.sendable_list()
        self._coro = ijson.items_coro(self._out, prefix, use_float=False)

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
        except ijson.IncompleteJSONError as e:
            raise ParseError(f"malformed JSON: {e}") from None
        except ijson.JSONError as e:
            raise ParseError(f"malformed JSON: {e}") from None
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
