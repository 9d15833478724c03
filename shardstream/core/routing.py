"""Match request paths to routes and pick the shard that owns a request.

Sans-IO: plain functions over the config, so the rules are tested without
a server. Routes are tried in config order; the first whose path matches and
whose methods include the request's wins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Protocol
from urllib.parse import unquote, unquote_to_bytes

from . import ids
from .config import Config, Route
from .directory import Owner, Pending, placement
from .errors import ClientError, TryLater

READS = frozenset({"GET", "HEAD", "OPTIONS"})  # never place a key, never wait for a move


class Owners(Protocol):
    """What routing needs of the directory (the shell's Directory)."""

    def lookup(self, kind: str, key: str) -> Owner | None:
        """The owner (None: no entry); raises Pending when it must be fetched first."""


class NotFound(ClientError):
    status = 404
    code = "not_found"


class MethodNotAllowed(ClientError):
    status = 405
    code = "method_not_allowed"


class UnknownShardKey(ClientError):
    status = 404
    code = "unknown_shard_key"


class BadGlobalId(ClientError):
    status = 400
    code = "bad_global_id"


class UnknownShard(ClientError):
    status = 404
    code = "unknown_shard"


class NoOwner(ClientError):
    """A write whose body does not say which shard owns it."""

    status = 400
    code = "no_owner"


class InlineOwners:
    """The inline ``[shard_map.KIND]`` tables alone (a Router without a shell)."""

    def __init__(self, config: Config) -> None:
        self.tables = {k: d.table for k, d in config.directory.items() if d.table is not None}

    def lookup(self, kind: str, key: str) -> Owner | None:
        return self.tables[kind].get(key)


class FindInstead(Exception):
    """A read for a key no directory entry names, on a kind whose ``unknown``
    is "find": ask every shard, and remember which one had it."""

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(kind, key)
        self.kind, self.key = kind, key


class BadTarget(ClientError):
    """A request target twisted.web's server lets through and its client refuses."""


class BadPath(ClientError):
    """A path that means another path once decoded or normalised: it could
    match a route it does not match as written, or climb a shard's tree."""

    code = "bad_path"


@dataclass(frozen=True)
class Match:
    route: Route
    params: Mapping[str, str]


def _decode_params(raw: dict[str, str]) -> dict[str, str]:
    params = {}
    for name, value in raw.items():
        try:
            params[name] = unquote(value, errors="strict")
        except UnicodeDecodeError:
            raise ClientError(f"path parameter {name} is not valid percent-encoded UTF-8") from None
        if params[name] in (".", "..") or value in (".", ".."):
            raise ClientError(f"path parameter {name} cannot be {params[name]!r}")
    return params


# Control characters or non-ASCII bytes: HTTP allows neither in a target.
_BAD_TARGET = re.compile(rb"[^\x21-\x7e]")
_DOTS = frozenset({b".", b".."})
_ENCODED_SEPARATOR = re.compile(rb"%(2[fF]|5[cC])")


def path_problem(path: bytes) -> str | None:
    """Why a request path is ambiguous (None: it is not): dot segments (also
    percent-encoded), empty segments (``//``), an encoded or literal
    separator inside a segment. Such a path is refused, never normalised:
    the shard behind might normalise it differently."""
    if not path.startswith(b"/"):
        return "the path must start with '/'"
    if b"\\" in path or _ENCODED_SEPARATOR.search(path):
        return "the path has an encoded '/' or a '\\' inside a segment"
    segments = path.split(b"/")[1:]
    for i, segment in enumerate(segments):
        if not segment and i < len(segments) - 1:
            return "the path has an empty segment ('//')"
        if unquote_to_bytes(segment) in _DOTS:
            return "the path has a '.' or '..' segment"
    return None


class Router:
    """The route table of one config."""

    def __init__(self, config: Config, owners: Owners | None = None) -> None:
        self.config = config
        self.owners = owners if owners is not None else InlineOwners(config)
        self._shards = {s.name for s in config.shards}
        self._placing = [(s.name, s.accepts_new, s.weight) for s in config.shards]

    def match_request(self, method: bytes, uri: bytes) -> Match:
        """The route for a raw request line's method and target."""
        if _BAD_TARGET.search(uri):
            raise BadTarget("the request target has bytes HTTP does not allow there "
                            "(control characters, non-ASCII): percent-encode them")
        problem = path_problem(uri.split(b"?", 1)[0])
        if problem is not None:
            raise BadPath(problem)
        return self.match(method.decode("ascii", "replace"),
                          uri.split(b"?", 1)[0].decode("latin-1"))

    def match(self, method: str, path: str) -> Match:
        """Find the route for a request, or raise NotFound/MethodNotAllowed."""
        allowed: set[str] = set()
        for route in self.config.routes:
            raw = route.path.match(path)
            if raw is None:
                continue
            if route.allows(method):
                return Match(route, _decode_params(raw))
            allowed |= route.methods or set()
        if allowed:
            raise MethodNotAllowed(
                f"{method} is not allowed on {path}", allow=sorted(allowed)
            )
        fallback = self.config.fallback
        if fallback is not None and fallback.allows(method):
            return Match(fallback, {})
        raise NotFound(f"no route for {path}")

    def owner(self, match: Match, raw_path: bytes, method: str = "GET"
              ) -> tuple[str, bytes] | None:
        """``(shard, path to send it)`` from the path, or None when the body decides."""
        route = match.route
        owner = route.owner
        if owner is None:
            return None
        if owner.global_id:
            gid = match.params[owner.global_id]
            shard, local = self.decode_global(gid)
            return shard, route.path.replace(raw_path, owner.global_id, local)
        if owner.shard_key:
            key = owner.shard_key
            value = match.params[key]
            return self.owner_of(route, key, value, method, UnknownShardKey), raw_path
        return None

    def owner_of(self, route: Route, kind: str, key: str, method: str,
                 unknown: type[ClientError]) -> str:
        """The shard a request for ``key`` goes to. A write for a key no shard
        owns is placed by the route's ``placement`` (Pending: the shell
        records it, then asks again), one for a tenant being moved waits
        (503); a read follows the owner, the source while a move is on."""
        dc = self.config.directory.get(kind)
        if dc is None:
            raise unknown(f"no shard owns {kind} {key!r} (there is no [shard_map.{kind}] "
                          f"or [directory.{kind}])")
        found = self.owners.lookup(kind, key)
        write = method not in READS
        if found is None:
            if not write:
                if dc.unknown == "find":
                    raise FindInstead(kind, key)
                raise unknown(f"no shard owns {kind} {key!r}")
            rule = route.owner.placement if route.owner is not None else "reject"
            shard = placement(rule, key, self._placing)
            if shard is None:
                raise unknown(f"no shard owns {kind} {key!r} (give a global id or a key "
                              f"the directory lists; this route's placement is \"reject\")")
            raise Pending(kind, place=(key, shard))
        if found.moving and write:
            raise TryLater(f"{kind} {key!r} is being moved from shard {found.shard} to "
                           f"{found.moving_to}; writes wait until the move is over",
                           retry_after=dc.retry_after, code="tenant_moving", kind=kind)
        return found.shard

    def targets(self, kind: str, keys: list[str]) -> list[str] | None:
        """The shards that own these keys, in config order (None: a key has no
        entry, so every shard is asked). Raises Pending for keys to fetch."""
        missing: list[str] = []
        owners = set()
        for key in keys:
            try:
                found = self.owners.lookup(kind, key)
            except Pending as e:
                missing.extend(e.keys)
                continue
            if found is None:
                return None
            owners.add(found.shard)
        if missing:
            raise Pending(kind, missing)
        return [s.name for s in self.config.shards if s.name in owners]

    def decode_global(self, gid: object) -> tuple[str, int | str]:
        try:
            shard, local = ids.decode(gid)
        except ids.BadGlobalId as e:
            raise BadGlobalId(str(e)) from None
        if shard not in self._shards:
            raise UnknownShard(f"{gid!r} names shard {shard!r}, which does not exist")
        return shard, local

    def body_owner(self, route: Route, body: object, method: str = "POST") -> str:
        """The shard that owns a write, from the route's ``shard_key_body`` field."""
        assert route.owner is not None and route.owner.shard_key_body is not None
        field = route.owner.shard_key_body
        value = field.lookup(body)
        if value is None or isinstance(value, (dict, list, bool)):
            raise NoOwner(f"the JSON body has no {field} field (a string or number); "
                          "it names the shard that owns this write")
        if isinstance(value, str) and ids.SEP in value:
            return self.decode_global(value)[0]
        return self.owner_of(route, field.text, str(value), method, NoOwner)
