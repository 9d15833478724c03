"""A list request's sort, limit, offset and cursor, and what each shard is asked.

Sans-IO. The client speaks the gateway's list parameters (``sort``, ``limit``,
``offset``, ``cursor``); each shard is asked, in the route's own parameter
names, for the sort and for just enough items: ``offset + limit`` from its
start on a first page, ``limit`` from its own position on a cursor page.

A cursor is ``base64url(payload) "." base64url(HMAC-SHA256(secret, payload)[:12])``.
It holds every shard's position (how many of its items, in the requested
order, the client has been given), so the next page asks each shard only for
what comes after it: a cursor chain returns every item exactly once whatever
the ties in the sort key, on any gateway instance that shares the secret.
The payload is binary, so that it stays short as shards are added (varints
are unsigned LEB128, strings UTF-8 after a varint length)::

    version  1 byte (2)
    flags    1 byte: bits 0-1 shard hash width (0: 2 bytes, 1: 4, 2: 8),
             bit 2 sort present, bit 3 limit present, bit 4 positions packed
    route    4 bytes, blake2b of the route's path
    shardset 4 bytes, blake2b of the sorted names of the shards it holds
    [sort]   string;  [limit] varint;  filters: string
    n        varint, the number of shards
    hashes   n x width bytes, ascending: blake2b(name, digest_size=width)
    positions, in the order of the hashes: n varints, or (packed) a byte W
             then n W-bit fields in a little-endian integer of ceil(n*W/8) bytes

Shards are named by a 2-byte hash, 4 (or 8) bytes only when two of the
cursor's shards collide. Decoding maps each hash back to one of the current
shards, the shardset telling apart the names that share a hash: a shard
added since the cursor was made starts from its beginning; a shard that is
gone is ``410 cursor_shard_gone``, the list has to start again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise, product
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from .config import Route, ScatterOptions
from .errors import ClientError

CLIENT_PARAMS = (b"sort", b"limit", b"offset", b"cursor", b"partial")
_EPHEMERAL_SECRET = os.urandom(32)  # used when the config has no [cursor] secret
_MAC_LEN = 12
_VERSION = 2
_WIDTHS = (2, 4, 8)  # bytes of a shard's hash, by the flags' bits 0-1
_SORT, _LIMIT, _PACKED = 4, 8, 16  # flags
_MAX_MATCHES = 4096  # ways to read a cursor's hashes as current shards, tried at most


class BadListQuery(ClientError):
    status = 400
    code = "bad_request"


class BadCursor(ClientError):
    status = 400
    code = "invalid_cursor"


class ShardGone(ClientError):
    """A cursor with the position of a shard that the gateway no longer has."""

    status = 410
    code = "cursor_shard_gone"


@dataclass(frozen=True)
class ListQuery:
    sort: str | None = None  # as the client wrote it: "starts_at" or "-starts_at"
    limit: int | None = None
    offset: int = 0
    positions: Mapping[str, int] | None = None  # from a cursor
    filters: str = ""  # the client's own query parameters, passed to every shard
    partial: bool | None = None  # ?partial=true|false; None: the route's default

    @property
    def sort_path(self) -> str | None:
        return split_sort(self.sort)[0] if self.sort else None

    @property
    def descending(self) -> bool:
        return bool(self.sort and self.sort.startswith("-"))

    def start(self, shard: str) -> int:
        """How many of this shard's items earlier pages consumed."""
        return (self.positions or {}).get(shard, 0)

    def quota(self) -> int | None:
        """Items each shard is asked for: enough for the whole page on its own."""
        if self.limit is None:
            return None
        return self.limit + (0 if self.positions is not None else self.offset)


def split_sort(sort: str) -> tuple[str, bool]:
    """``"-starts_at"`` -> ``("starts_at", True)``."""
    return (sort[1:], True) if sort.startswith("-") else (sort, False)


def _single(args: Mapping[bytes, list[bytes]], name: bytes) -> str | None:
    values = args.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadListQuery(f"{name.decode()} is given {len(values)} times")
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise BadListQuery(f"{name.decode()} is not valid UTF-8") from None


_DIGITS = re.compile(r"^[0-9]{1,18}\Z")


def _count(text: str | None, name: str, minimum: int) -> int | None:
    if text is None:
        return None
    if not _DIGITS.match(text) or int(text) < minimum:
        raise BadListQuery(f"{name} must be a whole number >= {minimum}, not {text!r}")
    return int(text)


def _boolean(text: str | None, name: str) -> bool | None:
    if text is None:
        return None
    if text not in ("true", "false"):
        raise BadListQuery(f"{name} must be true or false, not {text!r}")
    return text == "true"


def options(route: Route) -> ScatterOptions:
    """A scatter route's options (every function here is for scatter routes)."""
    if route.scatter is None:
        raise TypeError(f"{route.key} is not a scatter route")
    return route.scatter


def own_params(route: Route) -> set[bytes]:
    """Query parameters the gateway owns on this route (the client's and the shards')."""
    o = options(route)
    return set(CLIENT_PARAMS) | {p.encode() for p in (o.sort_param, o.limit_param, o.offset_param)}


def filters_of(route: Route, raw_query: bytes) -> str:
    """The client's own parameters (a filter such as vendor_id=v1), raw, in order."""
    owned = own_params(route)
    kept = [part for part in raw_query.split(b"&")
            if part and unquote_to_bytes(part.split(b"=", 1)[0].replace(b"+", b" ")) not in owned]
    return b"&".join(kept).decode("latin-1")


def parse(route: Route, args: Mapping[bytes, list[bytes]], secret: bytes | None,
          raw_query: bytes = b"", *, shards: Sequence[str] | None = None) -> ListQuery:
    """Validate the client's list parameters for a scatter route.

    A cursor carries the filters of the list it pages through: a cursor
    request may repeat them, but not change them (400). ``shards``, the
    gateway's current shard names, is needed to read a cursor (see
    :func:`decode_cursor`).
    """
    o = options(route)
    sort = _single(args, b"sort")
    if sort is not None:
        if o.sort_path(split_sort(sort)[0]) is None:
            allowed = ", ".join(p.text for p in o.sort) or "none"
            raise BadListQuery(
                f"cannot sort by {sort!r} (allowed: {allowed}; prefix '-' for descending)"
            )
    partial = _boolean(_single(args, b"partial"), "partial")
    limit = _count(_single(args, b"limit"), "limit", 1)
    offset = _count(_single(args, b"offset"), "offset", 0) or 0
    cursor = _single(args, b"cursor")
    positions = None
    filters = filters_of(route, raw_query)
    if cursor is not None:
        if offset:
            raise BadListQuery("offset cannot be combined with cursor")
        state = decode_cursor(cursor, route, secret, shards=shards)
        if filters and filters != state.get("f", ""):
            raise BadListQuery("this cursor was made for other query parameters; "
                               "send the cursor alone, or with the same ones")
        filters = state.get("f", "")
        if sort is not None and sort != state["s"]:
            raise BadListQuery(
                f"this cursor was made for sort={state['s'] or '(none)'}, not sort={sort}"
            )
        sort = state["s"]
        if limit is None:
            limit = state["l"]
        positions = state["p"]
    if sort is None and cursor is None:
        sort = o.default_sort
    if limit is None:
        limit = o.default_limit or o.max_limit
    if limit is not None and o.max_limit is not None and limit > o.max_limit:
        raise BadListQuery(f"limit {limit} is above this route's maximum of {o.max_limit}")
    return ListQuery(sort=sort, limit=limit, offset=offset, positions=positions, filters=filters,
                     partial=partial)


def shard_query(route: Route, query: ListQuery, shard: str) -> bytes:
    """The query string for one shard: the client's own parameters, unchanged,
    then the route's sort, limit and offset parameters."""
    o = options(route)
    kept = [query.filters.encode("latin-1")] if query.filters else []
    extra: list[tuple[str, str]] = []
    if query.sort is not None:
        extra.append((o.sort_param, query.sort))
    quota = query.quota()
    if quota is not None:
        extra.append((o.limit_param, str(quota)))
    start = query.start(shard)
    if start:
        extra.append((o.offset_param, str(start)))
    kept += [f"{quote(k, safe='')}={quote(v, safe='')}".encode() for k, v in extra]
    return b"&".join(kept)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes | None, payload: bytes) -> bytes:
    key = secret if secret is not None else _EPHEMERAL_SECRET
    return hmac.new(key, payload, hashlib.sha256).digest()[:_MAC_LEN]


def _hash(data: bytes, size: int) -> bytes:
    return hashlib.blake2b(data, digest_size=size).digest()


def _varint(n: int) -> bytes:
    if n < 0:
        raise ValueError(f"a cursor holds no negative numbers, not {n}")
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    return _varint(len(data)) + data


def _shardset(names: Iterable[str]) -> bytes:
    return _hash(b"".join(_string(n) for n in sorted(names)), 4)


class _Reader:
    """Reads a payload front to back; IndexError past its end."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise IndexError("past the end")
        self.at += n
        return self.data[self.at - n:self.at]

    def varint(self) -> int:
        n = shift = 0
        while True:
            byte = self.take(1)[0]
            n |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return n

    def string(self) -> str:
        return self.take(self.varint()).decode("utf-8")


def encode_cursor(route: Route, query: ListQuery, positions: Mapping[str, int],
                  secret: bytes | None) -> str:
    """The cursor for the page after ``positions`` (shard name -> items given)."""
    for code, width in enumerate(_WIDTHS):
        by_hash = {_hash(name.encode("utf-8"), width): n for name, n in positions.items()}
        if len(by_hash) == len(positions):
            break
    else:
        raise ValueError("shard names whose 8-byte hashes collide")
    hashes = sorted(by_hash)
    counts = [by_hash[h] for h in hashes]
    flags = (code | (_SORT if query.sort is not None else 0)
             | (_LIMIT if query.limit is not None else 0))
    encoded = b"".join(_varint(n) for n in counts)
    bits = max(counts, default=0).bit_length()
    if bits < 256:  # n fields of W bits, when shorter than n varints
        field = sum(n << (bits * i) for i, n in enumerate(counts))
        packed = bytes([bits]) + field.to_bytes((len(counts) * bits + 7) // 8, "little")
        if len(packed) < len(encoded):
            flags, encoded = flags | _PACKED, packed
    payload = b"".join([
        bytes([_VERSION, flags]), _hash(route.path.text.encode("utf-8"), 4), _shardset(positions),
        _string(query.sort) if query.sort is not None else b"",
        _varint(query.limit) if query.limit is not None else b"",
        _string(query.filters), _varint(len(hashes)), *hashes, encoded,
    ])
    return f"{_b64(payload)}.{_b64(_mac(secret, payload))}"


def _read(payload: bytes) -> tuple[bytes, bytes, dict[str, Any], int, dict[bytes, int]]:
    """route hash, shardset, state without "p", hash width, positions by hash"""
    r = _Reader(payload)
    version, flags = r.take(2)
    if version != _VERSION:
        raise BadCursor("this cursor is from another version of the gateway; start the list again")
    if flags & ~(3 | _SORT | _LIMIT | _PACKED) or flags & 3 == 3:
        raise ValueError("unknown flags")
    width = _WIDTHS[flags & 3]
    route_hash, shardset = r.take(4), r.take(4)
    state: dict[str, Any] = {"s": r.string() if flags & _SORT else None,
                             "l": r.varint() if flags & _LIMIT else None, "f": r.string()}
    if state["l"] is not None and state["l"] < 1:
        raise ValueError("limit 0")
    n = r.varint()
    hashes = [r.take(width) for _ in range(n)]
    if any(a >= b for a, b in pairwise(hashes)):
        raise ValueError("hashes not ascending")
    if flags & _PACKED:
        bits = r.take(1)[0]
        packed = int.from_bytes(r.take((n * bits + 7) // 8), "little")
        counts = [packed >> (bits * i) & ((1 << bits) - 1) for i in range(n)]
    else:
        counts = [r.varint() for _ in range(n)]
    if r.at != len(payload):
        raise ValueError("trailing bytes")
    return route_hash, shardset, state, width, dict(zip(hashes, counts, strict=True))


def decode_cursor(cursor: str, route: Route, secret: bytes | None, *,
                  shards: Sequence[str] | None = None) -> dict[str, Any]:
    """A verified cursor as ``{"s": sort, "l": limit, "p": {shard: position}, "f": filters}``.

    ``shards`` are the gateway's current shard names (required): "p" names
    those of them the cursor holds a position for. BadCursor (400) for a
    cursor that is altered, foreign, malformed or another route's; ShardGone
    (410) for one that holds the position of a shard not in ``shards``.
    """
    if shards is None:
        raise ValueError("decode_cursor needs the current shard names")
    body, dot, mac = cursor.partition(".")
    try:
        payload = _unb64(body)
        given = _unb64(mac)
    except ValueError:
        raise BadCursor("the cursor is not one this gateway issued") from None
    if not dot or not hmac.compare_digest(given, _mac(secret, payload)):
        raise BadCursor("the cursor is not one this gateway issued (or it was altered)")
    try:
        route_hash, shardset, state, width, by_hash = _read(payload)
    except (IndexError, ValueError):  # UnicodeDecodeError is a ValueError
        raise BadCursor("the cursor is malformed") from None
    if route_hash != _hash(route.path.text.encode("utf-8"), 4):
        raise BadCursor(f"this cursor belongs to another route, not {route.path.text}")
    current: dict[bytes, list[str]] = {}
    for name in dict.fromkeys(shards):
        current.setdefault(_hash(name.encode("utf-8"), width), []).append(name)
    candidates = [current.get(h, []) for h in by_hash]
    gone = ShardGone("this cursor was issued when the list had a shard that is gone now "
                     "(a shard was removed); start the list again without the cursor")
    ways = math.prod(len(same_hash) for same_hash in candidates)
    if ways == 0:
        raise gone
    if ways > _MAX_MATCHES:
        raise BadCursor("this cursor's shards cannot be told apart among the current ones; "
                        "start the list again without the cursor")
    for names in product(*candidates):  # almost always one way: the shardset tells them apart
        if _shardset(names) == shardset:
            state["p"] = dict(zip(names, by_hash.values(), strict=True))
            return state
    raise gone
