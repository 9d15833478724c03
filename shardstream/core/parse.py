"""Turn a shard's body bytes into list items as soon as each one completes.

Sans-IO: feed it bytes, it returns items. Numbers keep their exact value:
integers stay ``int`` (any size) and decimals ``Decimal``; the encoder writes
both back digit for digit.

A body that ends without the list at all (``{"error": "db down"}``, or
``{"data": null}`` behind a 200) is an error, not an empty shard: until the
first item appears the parser keeps the body's first bytes, and at the end
checks that the list was really there.
"""

from __future__ import annotations

import io
import re
import sys
from itertools import accumulate
from typing import Any

import ijson

BACKEND = ijson.backend
FAST_BACKEND = "yajl2_c"
_HEAD_LIMIT = 64 * 1024  # bytes kept to check a body that yields no item


def prepare() -> None:
    """Let the parser build integers of any length; the gateway calls this
    when it starts (never on import: it changes the whole interpreter).

    CPython refuses int() of more than 4300 digits by default, and ijson's C
    backend crashes the process on that refusal: a shard's data must never be
    able to do that. Exact numbers of any length are what the gateway promises.
    """
    sys.set_int_max_str_digits(0)


UNREPRESENTABLE = "the body has a number the gateway cannot represent (its exponent is too large)"


class ParseError(Exception):
    code = "malformed_json"

    def __init__(self, message: str, items: list[Any] | None = None) -> None:
        super().__init__(message)
        self.items = items or []  # complete items parsed before the error


class Truncated(ParseError):
    code = "truncated"


class NoList(ParseError):
    code = "no_list"


# The nesting a document may have, in both parsers (split.py's native one too):
# deeper is malformed_json. ijson has no limit, and what it keeps per level
# grows with the depth (a 30 KB body of brackets cost it 2 GB, 10,000 levels
# 250 MB); at 512 it is under a megabyte, and msgspec and Python's json, which
# read sort keys and rewrite ids, still decode every item.
MAX_DEPTH = 512
_STRUCTURE = re.compile(rb'["\\\[\]{}]')
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_STEPS = tuple(1 if c in b"[{" else -1 if c in b"]}" else 0 for c in range(256))


class _Depth:
    """How deep the document is, from its brackets outside strings, so that
    ijson never sees a level past the limit. Bytes methods (C) do the work:
    escape pairs are blanked (outside strings valid JSON has no backslash),
    the quotes that are left split strings from the rest, and the rest's
    brackets are summed; only a chunk that crosses the limit is walked byte
    by byte, to find where."""

    __slots__ = ("depth", "in_string", "escaped", "limit")

    def __init__(self, limit: int) -> None:
        self.depth, self.in_string, self.escaped, self.limit = 0, False, False, limit

    def feed(self, data: bytes) -> int:
        """Where in ``data`` the document went deeper than the limit, or -1."""
        x = b"_" + data[1:] if self.escaped else data  # escaped by the last chunk's backslash
        if b"\\" in x:
            x = x.replace(b"\\\\", b"__").replace(b'\\"', b"__")
        parts = x.split(b'"')
        outside = parts[1::2] if self.in_string else parts[::2]
        in_string = self.in_string ^ (len(parts) % 2 == 0)  # an odd number of quotes
        brackets = b"".join(outside).translate(None, _NOT_BRACKETS)
        if brackets:
            depths = list(accumulate(map(_STEPS.__getitem__, brackets), initial=self.depth))
            if max(depths) > self.limit:
                return self._where(data)
            self.depth = depths[-1]
        self.in_string = in_string
        self.escaped = in_string and x.endswith(b"\\")
        return -1

    def _where(self, data: bytes) -> int:
        """The byte walk: the index of the bracket past the limit."""
        depth, in_string = self.depth, self.in_string
        skip = 0 if self.escaped else -1
        self.escaped = False
        for m in _STRUCTURE.finditer(data):
            i = m.start()
            if i == skip:
                continue
            c = data[i]
            if in_string:
                if c == 0x5C:  # backslash: the next byte is not a quote or a bracket
                    skip = i + 1
                elif c == 0x22:
                    in_string = False
            elif c == 0x22:
                in_string = True
            elif c == 0x5B or c == 0x7B:
                depth += 1
                if depth > self.limit:
                    self.depth, self.in_string = depth, in_string
                    return i
            elif c == 0x5D or c == 0x7D:
                depth -= 1
        raise AssertionError("the bracket sums said the limit was crossed")  # pragma: no cover


class ItemParser:
    """Incremental parser for the items under one ijson prefix (e.g. ``data.item``).

    With ``total`` (a dotted path such as ``meta.total``) it also picks up the
    shard's total count, wherever in the document it stands.
    """

    __slots__ = ("_out", "_coro", "_total_out", "_total_coro", "total", "_prefix", "_head",
                 "_seen", "_offset", "_depth")

    def __init__(self, prefix: str, total: str | None = None,
                 max_depth: int = MAX_DEPTH) -> None:
        self._prefix = prefix
        self._depth = _Depth(max_depth)
        self._out: list[Any] = ijson.sendable_list()
        self._coro = ijson.items_coro(self._out, prefix, use_float=False)
        self.total: int | None = None
        self._total_coro: Any = None  # ijson's coroutine, until the total is seen
        self._head: bytearray | None = bytearray()  # until the first item
        self._seen = False
        self._offset = 0
        if total:
            self._total_out: list[Any] = ijson.sendable_list()
            self._total_coro = ijson.items_coro(self._total_out, total, use_float=False)

    def _take(self) -> list[Any]:
        out = self._out
        if not out:
            return []
        items = list(out)
        del out[:]
        self._seen = True
        self._head = None
        return items

    def feed(self, data: bytes) -> list[Any]:
        """Parse a chunk; return the items it completed (possibly none)."""
        if not data:
            return []  # to ijson an empty chunk is the end of the body: that is close()
        too_deep = self._depth.feed(data)
        if too_deep >= 0:  # the items before that bracket are good items
            items = self._parse(data[:too_deep]) if too_deep else []
            raise ParseError(f"the body stopped being valid JSON (within its first "
                             f"{self._offset + 1} bytes): nesting too deep (more than "
                             f"{self._depth.limit} levels)", items)
        return self._parse(data)

    def _parse(self, data: bytes) -> list[Any]:
        self._offset += len(data)
        if self._head is not None and len(self._head) < _HEAD_LIMIT:
            self._head += data[: _HEAD_LIMIT - len(self._head)]
        try:
            self._coro.send(data)
        except ArithmeticError:  # a number past Decimal's exponent range (1.5e99999999999)
            raise ParseError(UNREPRESENTABLE, self._take()) from None
        except (ijson.JSONError, UnicodeDecodeError):  # yajl passes some UTF-8 Python refuses
            raise ParseError(f"the body stopped being valid JSON (within its first "
                             f"{self._offset} bytes)", self._take()) from None
        if self._total_coro is not None:
            self._feed_total(data)
        return self._take()

    def close(self) -> list[Any]:
        """End of body: return the last items, or raise if the document is cut
        short or has no list at the prefix."""
        try:
            self._coro.close()
        except ArithmeticError:
            raise ParseError(UNREPRESENTABLE, self._take()) from None
        except ijson.IncompleteJSONError:
            raise Truncated(f"the body ended before the JSON document did "
                            f"({self._offset} bytes)", self._take()) from None
        except (ijson.JSONError, UnicodeDecodeError):
            raise ParseError("the body is not valid JSON", self._take()) from None
        items = self._take()
        if not self._seen and not self._list_started():
            where = self._prefix.rpartition(".")[0] or "the top level"
            raise NoList(f"the body has no list at {where}")
        return items

    def _list_started(self) -> bool:
        if self._head is None or len(self._head) >= _HEAD_LIMIT:
            return False  # so much body and not one item: not the list we want
        parent = self._prefix.rpartition(".")[0]
        try:
            for prefix, event, _ in ijson.parse(io.BytesIO(bytes(self._head))):
                if prefix == parent and event == "start_array":
                    return True
        except (ijson.JSONError, UnicodeDecodeError, ArithmeticError):
            return False
        return False

    def _feed_total(self, data: bytes) -> None:
        # Errors surface from the item coroutine, which sees the same bytes.
        try:
            self._total_coro.send(data)
        except (ijson.JSONError, UnicodeDecodeError, ArithmeticError):
            self._total_coro = None
            return
        out = self._total_out
        if out:
            value = out[0]
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                self.total = value
            self._total_coro = None
