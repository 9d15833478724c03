"""Cut a shard's list body into the exact bytes of each item, without decoding.

``ItemSplitter`` is the pass-through sibling of :class:`parse.ItemParser`: fed
the same chunks it completes the same items at the same moments, but returns
each as the ``bytes`` the shard sent (whitespace inside kept, the separating
commas and surrounding whitespace not), after validating the whole document
as JSON the way ijson's yajl2_c backend does. Errors are the same
``ParseError`` classes with the same ``code`` and ``items`` (here: spans).

It exists only as a C extension (``_splitter``): a pure-Python splitter would
be slower than ItemParser, whose work is done in C by yajl, so there is no
point in a Python fallback. When the extension is not built (``NATIVE`` is
False; ``setup.py`` marks it optional), constructing ``ItemSplitter`` raises
ImportError and the gateway keeps ItemParser.

Deliberate differences from ItemParser (each is a crash or a quirk there):

* strings that yajl lets through but Python cannot decode (overlong UTF-8,
  UTF-8-encoded surrogates, code points above U+10FFFF, a lone ``\\udc00``
  escape) make ItemParser leak ``UnicodeDecodeError``; here they are
  ``ParseError`` (``malformed_json``), raised when the string closes;
* ``feed(b"")`` is a no-op; ItemParser treats it as the end of the body;
* a total of more than ``sys.get_int_max_str_digits()`` digits is ignored
  (stays None) instead of crashing (see ``parse.prepare``).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Callable

import msgspec

from .parse import _HEAD_LIMIT, BACKEND, MAX_DEPTH, NoList, ParseError, Truncated
from .paths import DottedPath

try:
    from ._splitter import Splitter as _Splitter  # type: ignore[import-not-found]

    NATIVE = True
except ImportError:  # not built: the gateway keeps ItemParser
    _Splitter = None
    NATIVE = False

DEFAULT_MAX_DEPTH = MAX_DEPTH  # as ijson's path (parse.py)

CHOICES = ("auto", "native", "python")  # server.item_parser


def use_native(choice: str) -> bool:
    """Does ``server.item_parser`` put the native splitter on the request path?"""
    return NATIVE and choice != "python"


def describe(choice: str) -> str:
    """The start-up log's words for the item path in use."""
    if use_native(choice):
        return "native splitter (items pass through as the shard's bytes)"
    why = "server.item_parser = \"python\"" if NATIVE else "the native splitter is not built"
    return f"ijson {BACKEND} ({why})"


class ItemSplitter:
    """Incremental splitter for the items under one ijson prefix (e.g. ``data.item``).

    With ``total`` (a dotted path such as ``meta.total``) it also picks up the
    shard's total count, wherever in the document it stands.
    """

    __slots__ = ("_prefix", "_s", "_seen", "total")

    def __init__(self, prefix: str, total: str | None = None,
                 max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        if _Splitter is None:
            raise ImportError("shardstream.core._splitter is not built")
        self._prefix = prefix
        self._s: Any = _Splitter(tuple(prefix.split(".")),
                                 tuple(total.split(".")) if total else None, max_depth)
        self.total: int | None = None
        self._seen = False

    def feed(self, data: bytes) -> list[bytes]:
        """Split a chunk; return the items it completed (possibly none)."""
        s = self._s
        items: list[bytes] = s.feed(data)
        if items:
            self._seen = True
        if s.error is not None:
            raise ParseError(f"the body stopped being valid JSON (within its first "
                             f"{s.offset} bytes): {s.error}", items)
        self.total = s.total  # only from chunks that parsed, as ItemParser
        return items

    def close(self) -> list[bytes]:
        """End of body: return the last items, or raise if the document is cut
        short or has no list at the prefix."""
        s = self._s
        items: list[bytes] = s.close()
        if items:
            self._seen = True
        if s.error is not None:
            if s.error_kind == "truncated":
                raise Truncated(f"the body ended before the JSON document did "
                                f"({s.offset} bytes)", items)
            raise ParseError(f"the body is not valid JSON: {s.error}", items)
        # ItemParser looks for the list's start in the body's first 64 KiB only.
        if not self._seen and (s.offset >= _HEAD_LIMIT or not s.saw_list):
            where = self._prefix.rpartition(".")[0] or "the top level"
            raise NoList(f"the body has no list at {where}")
        return items


_MISSING = object()


def field_reader(path: DottedPath) -> Callable[[bytes], Any]:
    """A reader of one field of an item's bytes: the value at ``path`` (exact
    numbers: ints of any size, decimals as Decimal), or None when it is
    missing, null, or something on the way is not an object.

    msgspec decodes into a struct that declares only the path's keys, so the
    item's other fields are skipped in C without building any object: a
    sorted merge reads only its sort key, owner filtering only the owner.
    Duplicate keys: the last wins, as with ijson's objects.
    """
    parts = path.parts
    leaf: Any = Any
    for part in reversed(parts):  # the key is renamed: any string, even "" or "class"
        leaf = msgspec.defstruct("Field", [("f", leaf | None, None)], rename={"f": part},
                                 forbid_unknown_fields=False)
    decode = msgspec.json.Decoder(leaf, float_hook=Decimal).decode
    depth = len(parts)

    def read(item: bytes) -> Any:
        try:
            value: Any = decode(item)
        except msgspec.ValidationError:  # the item, or an object on the way, is not an object
            return None
        except (msgspec.DecodeError, RecursionError, ArithmeticError):
            # JSON the splitter passes that msgspec refuses: a lone surrogate
            # escape, an exponent beyond Decimal's, deep nesting elsewhere.
            return _read_slowly(item, path)
        if depth == 1:  # most keys (a sorted merge reads one per item): no loop
            return value.f
        for _ in range(depth):
            value = value.f
            if value is None:
                return None
        return value

    return read


class UnreadableField(ValueError):
    """An item's field could not be read (nested too deeply for any decoder)."""


def _number(text: str) -> Any:
    """Decimal, or a float (inf) for an exponent beyond Decimal's range."""
    try:
        return Decimal(text)
    except ArithmeticError:
        return float(text)


def _read_slowly(item: bytes, path: DottedPath) -> Any:
    """The field by Python's json module, which takes lone surrogates."""
    try:
        doc: Any = json.loads(item, parse_float=_number)
    except (RecursionError, ValueError) as e:
        raise UnreadableField(f"a field of an item could not be read ({e.__class__.__name__}: "
                              f"{e})") from None
    return path.lookup(doc)
