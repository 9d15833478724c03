"""A list request's sort, limit, offset and cursor, and what each shard is asked.

Sans-IO. The client speaks the gateway's list parameters (``sort``, ``limit``,
``offset``, ``cursor``); each shard is asked, in the route's own parameter
names, for the sort and for just enough items: ``offset + limit`` from its
start on a first page, ``limit`` from its own position on a cursor page.

A cursor is ``base64url(JSON payload) "." base64url(HMAC-SHA256)[:22]``. The
payload holds the route, the sort, the limit and every shard's position (how
many of its items, in the requested order, the client has been given). The
next page asks each shard only for what comes after that position, so a
cursor chain returns every item exactly once whatever the ties in the sort
key, and a cursor works on any gateway instance that shares the secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import quote, unquote_to_bytes

from .config import Route, ScatterOptions
from .errors import ClientError

CLIENT_PARAMS = (b"sort", b"limit", b"offset", b"cursor", b"partial")
_EPHEMERAL_SECRET = os.urandom(32)  # used when the config has no [cursor] secret
_MAC_LEN = 16


class BadListQuery(ClientError):
    status = 400
    code = "bad_request"


class BadCursor(ClientError):
    status = 400
    code = "invalid_cursor"


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
          raw_query: bytes = b"") -> ListQuery:
    """Validate the client's list parameters for a scatter route.

    A cursor carries the filters of the list it pages through: a cursor
    request may repeat them, but not change them (400).
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
        state = decode_cursor(cursor, route, secret)
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


def encode_cursor(route: Route, query: ListQuery, positions: Mapping[str, int],
                  secret: bytes | None) -> str:
    payload = json.dumps(
        {"v": 1, "r": route.path.text, "s": query.sort, "l": query.limit, "p": dict(positions),
         "f": query.filters},
        separators=(",", ":"), sort_keys=True,
    ).encode()
    return f"{_b64(payload)}.{_b64(_mac(secret, payload))}"


def decode_cursor(cursor: str, route: Route, secret: bytes | None) -> dict[str, Any]:
    """The verified payload of a cursor; BadCursor (400) for anything else."""
    body, dot, mac = cursor.partition(".")
    try:
        payload = _unb64(body)
        given = _unb64(mac)
    except ValueError:
        raise BadCursor("the cursor is not one this gateway issued") from None
    if not dot or not hmac.compare_digest(given, _mac(secret, payload)):
        raise BadCursor("the cursor is not one this gateway issued (or it was altered)")
    try:
        state = json.loads(payload)
        ok = (
            state["v"] == 1
            and (state["s"] is None or isinstance(state["s"], str))
            and (state["l"] is None or (isinstance(state["l"], int) and state["l"] > 0))
            and all(isinstance(k, str) and isinstance(v, int) and v >= 0
                    for k, v in state["p"].items())
            and isinstance(state.get("f", ""), str)
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise BadCursor("the cursor is malformed")
    if state["r"] != route.path.text:
        raise BadCursor(f"this cursor belongs to {state['r']}, not {route.path.text}")
    verified: dict[str, Any] = state
    return verified
