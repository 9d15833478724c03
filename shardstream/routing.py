"""Match request paths to routes and pick the shard that owns a request.

Sans-IO: plain functions over the config, so the rules are tested without
a server. Routes are tried in config order; the first whose path matches and
whose methods include the request's wins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import quote, unquote

from . import ids
from .config import PARAM, Config, Route


class RoutingError(Exception):
    """A request that no route can serve; carries the HTTP answer."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, **extra: object) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class NotFound(RoutingError):
    status = 404
    code = "not_found"


class MethodNotAllowed(RoutingError):
    status = 405
    code = "method_not_allowed"


class UnknownShardKey(RoutingError):
    status = 404
    code = "unknown_shard_key"


class BadGlobalId(RoutingError):
    status = 400
    code = "bad_global_id"


class UnknownShard(RoutingError):
    status = 404
    code = "unknown_shard"


class NoOwner(RoutingError):
    """A write whose body does not say which shard owns it."""

    status = 400
    code = "no_owner"


@dataclass(frozen=True)
class Match:
    route: Route
    params: Mapping[str, str]


def _compile(path: str) -> re.Pattern[str]:
    parts = []
    for seg in path.split("/")[1:]:
        m = PARAM.match(seg)
        parts.append(f"(?P<{m.group(1)}>[^/]+)" if m else re.escape(seg))
    return re.compile("^/" + "/".join(parts) + r"\Z")


def _replace_segment(raw_path: bytes, route: Route, param: str, value: int | str) -> bytes:
    """The request path with one parameter's segment replaced (query kept)."""
    path, sep, query = raw_path.partition(b"?")
    segments = path.split(b"/")
    index = route.path.split("/").index("{" + param + "}")
    text = quote(str(value), safe="")
    if text in (".", ".."):  # a path segment of dots would climb the shard's tree
        text = text.replace(".", "%2E")
    segments[index] = text.encode()
    return b"/".join(segments) + sep + query


def _decode_params(raw: dict[str, str]) -> dict[str, str]:
    params = {}
    for name, value in raw.items():
        try:
            params[name] = unquote(value, errors="strict")
        except UnicodeDecodeError:
            raise RoutingError(f"path parameter {name} is not valid percent-encoded UTF-8") from None
        if params[name] in (".", "..") or value in (".", ".."):
            raise RoutingError(f"path parameter {name} cannot be {params[name]!r}")
    return params


class Router:
    """The route table of one config."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._table = [(_compile(r.path), r) for r in config.routes]
        self._shards = {s.name for s in config.shards}

    def match(self, method: str, path: str) -> Match:
        """Find the route for a request, or raise NotFound/MethodNotAllowed."""
        allowed: set[str] = set()
        for pattern, route in self._table:
            m = pattern.match(path)
            if m is None:
                continue
            if route.allows(method):
                return Match(route, _decode_params(m.groupdict()))
            allowed |= route.methods or set()
        if allowed:
            raise MethodNotAllowed(
                f"{method} is not allowed on {path}", allow=sorted(allowed)
            )
        raise NotFound(f"no route for {path}")

    def owner(self, match: Match, raw_path: bytes) -> tuple[str, bytes] | None:
        """``(shard, path to send it)`` from the path, or None when the body decides."""
        route = match.route
        if route.global_id:
            gid = match.params[route.global_id]
            shard, local = self.decode_global(gid)
            return shard, _replace_segment(raw_path, route, route.global_id, local)
        if route.shard_key:
            key = route.shard_key
            value = match.params[key]
            shard = self.config.shard_map[key].get(value)
            if shard is None:
                raise UnknownShardKey(f"no shard owns {key} {value!r}")
            return shard, raw_path
        return None

    def decode_global(self, gid: object) -> tuple[str, int | str]:
        try:
            shard, local = ids.decode(gid)
        except ids.BadGlobalId as e:
            raise BadGlobalId(str(e)) from None
        if shard not in self._shards:
            raise UnknownShard(f"{gid!r} names shard {shard!r}, which does not exist")
        return shard, local

    def body_owner(self, route: Route, body: object) -> str:
        """The shard that owns a write, from the route's ``shard_key_body`` field."""
        field = route.shard_key_body
        assert field is not None
        value = ids.lookup(body, tuple(field.split(".")))
        if value is None or isinstance(value, (dict, list, bool)):
            raise NoOwner(f"the JSON body has no {field} field (a string or number); "
                          "it names the shard that owns this write")
        if isinstance(value, str) and ids.SEP in value:
            return self.decode_global(value)[0]
        shard = self.config.shard_map.get(field, {}).get(str(value))
        if shard is None:
            raise NoOwner(f"no shard owns {field} {value!r} (give a global id or a key "
                          f"listed in [shard_map.{field}])")
        return shard
