"""Match request paths to routes and pick the shard that owns a request.

Sans-IO: plain functions over the config, so the rules are tested without
a server. Routes are tried in config order; the first whose path matches and
whose methods include the request's wins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import unquote

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


@dataclass(frozen=True)
class Match:
    route: Route
    params: Mapping[str, str]


def _compile(path: str) -> re.Pattern[str]:
    parts = []
    for seg in path.split("/")[1:]:
        m = PARAM.match(seg)
        parts.append(f"(?P<{m.group(1)}>[^/]+)" if m else re.escape(seg))
    return re.compile("^/" + "/".join(parts) + "$")


def _decode_params(raw: dict[str, str]) -> dict[str, str]:
    params = {}
    for name, value in raw.items():
        try:
            params[name] = unquote(value, errors="strict")
        except UnicodeDecodeError:
            raise RoutingError(f"path parameter {name} is not valid percent-encoded UTF-8") from None
    return params


class Router:
    """The route table of one config."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._table = [(_compile(r.path), r) for r in config.routes]

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

    def owner(self, match: Match) -> str:
        """The name of the shard that owns a route-mode request."""
        key = match.route.shard_key
        assert key is not None
        value = match.params[key]
        shard = self.config.shard_map[key].get(value)
        if shard is None:
            raise UnknownShardKey(f"no shard owns {key} {value!r}")
        return shard
