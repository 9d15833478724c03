"""Global ids: a shard's local id plus the shard's name, in one URL-safe string.

Every shard is an independent database, so local ids collide across shards.
On the way out the gateway rewrites the configured id fields into global ids;
on the way in it turns a global id back into (shard, local id). Format::

    <shard>~i<decimal>        integer local id        eu~i42, us~i-7
    <shard>~r<text>           string made of [A-Za-z0-9._-]   eu~rv100
    <shard>~b<base64url>      any other string (UTF-8, no padding)  eu~bdjEgMDA

Shard names use ``[A-Za-z0-9_-]``, so the first ``~`` ends the name; the tag
keeps ``42`` and ``"42"`` apart. Every character is URL-unreserved. Ids that
are neither integers nor strings are left as they are.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any, Callable, Iterable

from .encode import encode_value, loads
from .paths import DottedPath

SEP = "~"
_RAW = re.compile(r"^[A-Za-z0-9._-]+\Z")
_INT = re.compile(r"^-?[0-9]+\Z")
_B64 = re.compile(r"^[A-Za-z0-9_-]+\Z")


class BadGlobalId(ValueError):
    """Not a global id at all (400)."""


def encode(shard: str, local: Any) -> Any:
    if isinstance(local, bool):
        return local
    if isinstance(local, int):
        return f"{shard}{SEP}i{local}"
    if isinstance(local, str):
        if _RAW.match(local):
            return f"{shard}{SEP}r{local}"
        b = base64.urlsafe_b64encode(local.encode("utf-8")).rstrip(b"=").decode("ascii")
        return f"{shard}{SEP}b{b}"
    return local


def decode(gid: Any) -> tuple[str, int | str]:
    """``(shard, local id)`` of a global id, or BadGlobalId."""
    if not isinstance(gid, str):
        raise BadGlobalId(f"{gid!r} is not a global id (a string like 'eu~i42')")
    shard, sep, rest = gid.partition(SEP)
    if not sep or not shard or len(rest) < 2:
        raise BadGlobalId(f"{gid!r} is not a global id (like 'eu~i42')")
    tag, body = rest[0], rest[1:]
    local: int | str | None = None
    if tag == "i" and _INT.match(body):
        local = int(body)
    elif tag == "r" and _RAW.match(body):
        local = body
    elif tag == "b" and _B64.match(body):
        try:
            local = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            local = None
    if local is not None and encode(shard, local) == gid:  # exactly one spelling per id
        return shard, local
    raise BadGlobalId(f"{gid!r} is not a global id (like 'eu~i42')")


def _visit(obj: Any, parts: tuple[str, ...], fn: Callable[[dict[str, Any], str], None]) -> None:
    """Apply fn(container, key) at every place a dotted path reaches (lists fan out)."""
    if isinstance(obj, list):
        for element in obj:
            _visit(element, parts, fn)
        return
    if not isinstance(obj, dict) or parts[0] not in obj:
        return
    if len(parts) == 1:
        fn(obj, parts[0])
    else:
        _visit(obj[parts[0]], parts[1:], fn)


def globalize(obj: Any, paths: Iterable[DottedPath], shard: str) -> None:
    """Rewrite the id fields of an item (in place) into global ids of ``shard``."""

    def rewrite(container: dict[str, Any], key: str) -> None:
        container[key] = encode(shard, container[key])

    for path in paths:
        _visit(obj, path.parts, rewrite)


def _escapes_of(chars: str) -> re.Pattern[bytes]:
    """The JSON escapes that can stand for any of these characters."""
    forms: set[bytes] = set()
    for ch in set(chars):
        units = ch.encode("utf-16-be")
        for i in range(0, len(units), 2):
            forms.add(b"\\\\u" + units[i:i + 2].hex().encode())
        if ch in "\"\\\b\f\n\r\t":  # a short escape too
            forms.add(re.escape(json.dumps(ch)[1:-1].encode()))
    if "/" in chars:
        forms.add(rb"\\/")
    return re.compile(b"(?i:" + b"|".join(sorted(forms)) + b")" if forms else rb"(?!)")


def raw_globalizer(paths: Iterable[DottedPath]) -> Callable[[bytes, str], bytes]:
    """:func:`globalize` for an item's JSON bytes (the native splitter's).

    Only an item that may hold an id field is decoded and re-encoded: one
    whose bytes contain the quoted name of a path's first key, or an escape
    that could spell one of its characters (``"\\u0069d"`` is ``"id"``).
    Every other item passes as the shard sent it.
    """
    paths = tuple(paths)
    names = tuple({encode_value(p.parts[0]) for p in paths})
    escapes = _escapes_of("".join(p.parts[0] for p in paths))

    def rewrite(item: bytes, shard: str) -> bytes:
        if not any(name in item for name in names) and (
                b"\\" not in item or not escapes.search(item)):
            return item
        doc = loads(item)
        globalize(doc, paths, shard)
        return encode_value(doc)

    return rewrite


def localize(obj: Any, paths: Iterable[DottedPath]) -> set[str]:
    """Turn global ids in the id fields back into local ids (in place).

    Returns the shards they named, so the caller can refuse a body that
    refers to another shard than the one it is written to. Values that are
    not global ids are left alone (a client may send local ids too).
    """
    shards: set[str] = set()

    def rewrite(container: dict[str, Any], key: str) -> None:
        try:
            shard, local = decode(container[key])
        except BadGlobalId:
            return
        shards.add(shard)
        container[key] = local

    for path in paths:
        _visit(obj, path.parts, rewrite)
    return shards
