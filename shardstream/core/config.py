"""Load and validate the gateway's TOML config into immutable objects.

Everything is checked before the gateway listens, so a typo never turns into
a half-working daemon: every problem is reported as ``file: key: problem``.
A loaded :class:`Config` is never mutated; a reload builds a new one.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping, NoReturn
from urllib.parse import urlsplit

from .paths import DottedPath, PathTemplate

MODES = ("scatter", "route", "find")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
SHARD_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
DEFAULT_LISTEN = "tcp:8080:interface=127.0.0.1"


class ConfigError(Exception):
    """A config problem, phrased so that ops can fix it without reading code."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source, self.key, self.problem = source, key, problem
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class ServerConfig:
    listen: str = DEFAULT_LISTEN
    max_body: int = 10 * 1024 * 1024
    access_log: bool = True
    workers: int | str = 1  # a count, or "auto": one per core
    drain_timeout: float = 10.0
    drain_delay: float = 0.0  # on SIGTERM: /readyz says 503 this long before the listener closes
    write_buffer: int = 64 * 1024  # bytes queued for a slow client before its shards pause
    merge_queue: int = 128  # items queued per shard in a sorted merge before it pauses


@dataclass(frozen=True)
class UpstreamConfig:
    connect_timeout: float = 2.0
    first_byte_timeout: float = 5.0
    idle_timeout: float = 10.0
    total_timeout: float = 60.0
    max_idle_connections: int = 64
    retries: int = 2  # further attempts on other replicas, per shard request
    retry_budget: float = 0.2  # retries at most this share of requests (10 s window) ...
    retry_budget_min: int = 10  # ... plus this many per window, whatever the traffic


@dataclass(frozen=True)
class OutlierConfig:
    consecutive_failures: int = 5
    base_ejection: float = 1.0
    max_ejection: float = 30.0


@dataclass(frozen=True)
class AdminConfig:
    """The gateway's own endpoints (/livez, /readyz, /healthz)."""

    # /readyz: how many shards must have an available replica: a count (int),
    # or a share of the shards (float, 0 < share <= 1).
    ready_min_shards: int | float = 1

    def required(self, shards: int) -> int:
        """The count of ready shards this asks for, out of ``shards``."""
        value = self.ready_min_shards
        if isinstance(value, int):
            return value
        return max(1, math.ceil(value * shards - 1e-9))


@dataclass(frozen=True)
class HealthConfig:
    """Active checks; off when ``path`` is None."""

    path: str | None = None
    interval: float = 5.0
    timeout: float = 1.0
    healthy_threshold: int = 2
    unhealthy_threshold: int = 2


@dataclass(frozen=True)
class Shard:
    name: str
    urls: tuple[str, ...]



@dataclass(frozen=True)
class ScatterOptions:
    """A list route: how its shards' lists are found, merged and paged."""

    items: str  # ijson prefix of the list's items in a shard's body, e.g. "data.item"
    sort: tuple[DottedPath, ...] = ()  # the keys a client may sort by
    default_sort: str | None = None
    sort_param: str = "sort"
    limit_param: str = "limit"
    offset_param: str = "offset"
    max_limit: int | None = None
    default_limit: int | None = None
    total: str | None = None  # ijson prefix of a shard's total count, e.g. "meta.total"
    partial: bool = True  # False: a shard failure fails the whole response (?partial=)

    def sort_path(self, name: str) -> DottedPath | None:
        for path in self.sort:
            if path.text == name:
                return path
        return None


@dataclass(frozen=True)
class RelayOptions:
    """A one-shard answer (route and find modes): where the resource sits in
    the body (for id rewriting; None: the whole body) and the body limit."""

    item: DottedPath | None = DottedPath("data", ("data",))
    max_body: int | None = None


@dataclass(frozen=True)
class OwnerOptions:
    """How a route-mode request names its shard: exactly one of these is set."""

    global_id: str | None = None  # a path parameter holding a global id
    shard_key: str | None = None  # a path parameter looked up in [shard_map.<name>]
    shard_key_body: DottedPath | None = None  # a field of the JSON body


@dataclass(frozen=True)
class FindOptions:
    """A find route's owner cache."""

    cache_size: int = 10000
    cache_ttl: float = 300.0


@dataclass(frozen=True)
class Route:
    """One ``[[routes]]`` entry. Only the options of its mode are set:
    ``scatter`` for a scatter route, ``relay`` and ``owner`` for a route-mode
    route, ``relay`` and ``find`` for a find route."""

    path: PathTemplate
    mode: str
    methods: frozenset[str] | None  # None: every method
    key: str = ""  # "routes[N]" for messages
    id_fields: tuple[DottedPath, ...] = ()
    scatter: ScatterOptions | None = None
    relay: RelayOptions | None = None
    owner: OwnerOptions | None = None
    find: FindOptions | None = None

    @property
    def params(self) -> tuple[str, ...]:
        return self.path.params

    def allows(self, method: str) -> bool:
        return self.methods is None or method in self.methods


@dataclass(frozen=True)
class Config:
    source: str
    server: ServerConfig
    upstream: UpstreamConfig
    shards: tuple[Shard, ...]
    routes: tuple[Route, ...]
    health: HealthConfig = HealthConfig()
    outlier: OutlierConfig = OutlierConfig()
    admin: AdminConfig = AdminConfig()
    shard_map: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    # HMAC key for list cursors; None: a random one per process (see [cursor]).
    cursor_secret: bytes | None = field(default=None, repr=False)

    def max_body(self, route: Route | None) -> int:
        if route is not None and route.relay is not None and route.relay.max_body is not None:
            return route.relay.max_body
        return self.server.max_body

    def shard(self, name: str) -> Shard:
        for shard in self.shards:
            if shard.name == name:
                return shard
        raise KeyError(name)


class _Table:
    """One TOML table under validation; remembers its key path for messages."""

    def __init__(self, source: str, key: str, data: Any) -> None:
        self.source, self.key = source, key
        if not isinstance(data, dict):
            self.fail("", f"must be a table, not {_kind(data)}")
        self.data: dict[str, Any] = data
        self.seen: set[str] = set()

    def path(self, name: str) -> str:
        if not name:
            return self.key
        return f"{self.key}.{name}" if self.key else name

    def fail(self, name: str, problem: str) -> NoReturn:
        raise ConfigError(self.source, self.path(name), problem)

    def get(self, name: str, default: Any = ...) -> Any:
        self.seen.add(name)
        if name not in self.data:
            if default is ...:
                self.fail(name, "is required")
            return default
        return self.data[name]

    def string(self, name: str, default: Any = ...) -> Any:
        value = self.get(name, default)
        if value is not default and (not isinstance(value, str) or not value):
            self.fail(name, f"must be a non-empty string, not {_kind(value)}")
        return value

    def number(self, name: str, default: float | None, integer: bool = False,
               minimum: float | None = None, maximum: float | None = None) -> Any:
        """A number > 0, or >= ``minimum`` (and <= ``maximum``) when given."""
        value = self.get(name, default)
        if value is None:
            return None
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            what = "a whole number" if integer else "a number"
            self.fail(name, f"must be {what}, not {_kind(value)}")
        if minimum is None and value <= 0:
            self.fail(name, f"must be greater than 0, not {value}")
        if minimum is not None and value < minimum:
            self.fail(name, f"must be at least {minimum}, not {value}")
        if maximum is not None and value > maximum:
            self.fail(name, f"must be at most {maximum}, not {value}")
        return value if integer else float(value)

    def boolean(self, name: str, default: bool) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            self.fail(name, f"must be true or false, not {_kind(value)}")
        return value

    def strings(self, name: str, default: Any = ...) -> Any:
        value = self.get(name, default)
        if value is default:
            return value
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, str) and v for v in value)
        ):
            self.fail(name, "must be a non-empty list of non-empty strings")
        return value

    def table(self, name: str, required: bool = False) -> "_Table":
        value = self.get(name, ... if required else {})
        return _Table(self.source, self.path(name), value)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            known = ", ".join(sorted(self.seen))
            self.fail(unknown[0], f"unknown key (known keys here: {known})")


def _kind(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


# Checks a listen endpoint string; returns the problem, or None when it is
# good. The core cannot parse Twisted endpoints itself: the daemon passes
# Twisted's parser in (shardstream.daemon.endpoints.endpoint_problem).
ListenCheck = Callable[[str], "str | None"]


def load(path: str, check_listen: ListenCheck | None = None) -> Config:
    """Read and validate a config file; raise ConfigError naming file and key."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(path, "", f"cannot read: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, "", f"invalid TOML: {e}") from None
    return parse(data, path, check_listen)


def parse(data: dict[str, Any], source: str = "<config>",
          check_listen: ListenCheck | None = None) -> Config:
    """Validate an already-decoded config mapping (used by load and the demo)."""
    top = _Table(source, "", data)
    server = _server(top.table("server"), check_listen)
    upstream = _upstream(top.table("upstream"))
    shards = _shards(top.table("shards", required=True))
    names = {s.name for s in shards}
    shard_map = _shard_map(top.table("shard_map"), names)
    routes = _routes(top, shard_map)
    secret = _cursor(top.table("cursor"))
    health = _health(top.table("health"))
    outlier = _outlier(top.table("outlier"))
    admin = _admin(top.table("admin"), len(shards))
    top.done()
    return Config(source, server, upstream, shards, routes, shard_map=shard_map,
                  cursor_secret=secret, health=health, outlier=outlier, admin=admin)


def _admin(t: _Table, shards: int) -> AdminConfig:
    value = t.get("ready_min_shards", AdminConfig.ready_min_shards)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        t.fail("ready_min_shards", "must be a count of shards (a whole number) or a share of "
               f"them (a number between 0 and 1, such as 0.5), not {_kind(value)}")
    if isinstance(value, int):
        if not 1 <= value <= shards:
            t.fail("ready_min_shards", f"a count of shards must be between 1 and the {shards} "
                   f"configured, not {value}")
    elif not 0 < value <= 1:
        t.fail("ready_min_shards", f"a share of the shards must be above 0 and at most 1, "
               f"not {value}")
    t.done()
    return AdminConfig(ready_min_shards=value)


def _health(t: _Table) -> HealthConfig:
    d = HealthConfig()
    path = t.string("path", None)
    if path is not None and not path.startswith("/"):
        t.fail("path", f"{path!r} must start with '/'")
    h = HealthConfig(
        path=path,
        interval=t.number("interval", d.interval),
        timeout=t.number("timeout", d.timeout),
        healthy_threshold=t.number("healthy_threshold", d.healthy_threshold, integer=True),
        unhealthy_threshold=t.number("unhealthy_threshold", d.unhealthy_threshold, integer=True),
    )
    t.done()
    if h.timeout >= h.interval:
        t.fail("timeout", f"must be shorter than interval ({h.interval:g} s)")
    return h


def _outlier(t: _Table) -> OutlierConfig:
    d = OutlierConfig()
    o = OutlierConfig(
        consecutive_failures=t.number("consecutive_failures", d.consecutive_failures,
                                      integer=True),
        base_ejection=t.number("base_ejection", d.base_ejection),
        max_ejection=t.number("max_ejection", d.max_ejection),
    )
    t.done()
    if o.max_ejection < o.base_ejection:
        t.fail("max_ejection", f"must be at least base_ejection ({o.base_ejection:g} s)")
    return o


def _cursor(t: _Table) -> bytes | None:
    env = t.string("secret_env", None)
    path = t.string("secret_file", None)
    t.done()
    if env and path:
        t.fail("secret_env", "set secret_env or secret_file, not both")
    secret: str | bytes | None = None
    if env:
        import os

        secret = os.environ.get(env)
        if not secret:
            t.fail("secret_env", f"environment variable {env} is not set or empty")
    elif path:
        try:
            with open(path, "rb") as f:
                secret = f.read().strip()
        except OSError as e:
            t.fail("secret_file", f"cannot read {path}: {e.strerror or e}")
    if secret is None:
        return None
    secret = secret.encode() if isinstance(secret, str) else secret
    if len(secret) < 16:
        t.fail("secret_env" if env else "secret_file", "the secret must be at least 16 bytes")
    return secret


def _server(t: _Table, check_listen: ListenCheck | None) -> ServerConfig:
    listen = t.string("listen", DEFAULT_LISTEN)
    problem = check_listen(listen) if check_listen is not None else None
    if problem:
        t.fail("listen", problem)
    max_body = t.number("max_body", ServerConfig.max_body, integer=True)
    access_log = t.boolean("access_log", True)
    workers = t.get("workers", 1)
    if workers != "auto" and (isinstance(workers, bool) or not isinstance(workers, int)
                              or workers < 1):
        t.fail("workers", f"must be a whole number >= 1 or \"auto\", not {workers!r}")
    if workers != 1 and not listen.split(":", 1)[0] in ("tcp", "tcp6", "systemd"):
        t.fail("workers", "several workers share a tcp: or systemd: listening socket; "
               "put TLS in front (the load balancer) or use one worker")
    drain_timeout = t.number("drain_timeout", ServerConfig.drain_timeout)
    drain_delay = t.number("drain_delay", ServerConfig.drain_delay, minimum=0)
    write_buffer = t.number("write_buffer", ServerConfig.write_buffer, integer=True)
    merge_queue = t.number("merge_queue", ServerConfig.merge_queue, integer=True)
    t.done()
    return ServerConfig(listen=listen, max_body=max_body, access_log=access_log, workers=workers,
                        drain_timeout=drain_timeout, drain_delay=drain_delay,
                        write_buffer=write_buffer, merge_queue=merge_queue)


def _upstream(t: _Table) -> UpstreamConfig:
    d = UpstreamConfig()
    up = UpstreamConfig(
        connect_timeout=t.number("connect_timeout", d.connect_timeout),
        first_byte_timeout=t.number("first_byte_timeout", d.first_byte_timeout),
        idle_timeout=t.number("idle_timeout", d.idle_timeout),
        total_timeout=t.number("total_timeout", d.total_timeout),
        max_idle_connections=t.number(
            "max_idle_connections", d.max_idle_connections, integer=True
        ),
        retries=t.number("retries", d.retries, integer=True, minimum=0),
        retry_budget=t.number("retry_budget", d.retry_budget, minimum=0, maximum=1),
        retry_budget_min=t.number("retry_budget_min", d.retry_budget_min, integer=True,
                                  minimum=0),
    )
    t.done()
    return up


def _shards(t: _Table) -> tuple[Shard, ...]:
    if not t.data:
        t.fail("", "at least one shard is required, e.g. [shards.s1] urls = [...]")
    shards = []
    for name in t.data:
        st = t.table(name)
        if not SHARD_NAME.match(name):
            t.fail(name, "a shard name may only use letters, digits, '_' and '-'")
        urls = tuple(_url(u, st) for u in st.strings("urls"))
        for i, url in enumerate(urls):
            if url in urls[:i]:
                st.fail("urls", f"{url!r} is listed twice (replicas must be distinct)")
        st.done()
        shards.append(Shard(name=name, urls=urls))
    return tuple(shards)


def _url(url: str, t: _Table) -> str:
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError as e:
        t.fail("urls", f"{url!r} is not a valid URL ({e})")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        t.fail("urls", f"{url!r} must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        t.fail("urls", f"{url!r} must not have a query or fragment")
    return url.rstrip("/")


def _shard_map(t: _Table, shard_names: set[str]) -> Mapping[str, Mapping[str, str]]:
    out = {}
    for key_name in t.data:
        mt = t.table(key_name)
        for value, shard in mt.data.items():
            mt.seen.add(value)
            if not isinstance(shard, str):
                mt.fail(value, f"must name a shard (a string), not {_kind(shard)}")
            if shard not in shard_names:
                mt.fail(value, f"names shard {shard!r}, which is not in [shards]")
        out[key_name] = MappingProxyType(dict(mt.data))
    return MappingProxyType(out)


def _routes(top: _Table, shard_map: Mapping[str, Any]) -> tuple[Route, ...]:
    raw = top.get("routes", None)
    if not isinstance(raw, list) or not raw:
        top.fail("routes", "at least one [[routes]] entry is required")
    routes: list[Route] = []
    for i, item in enumerate(raw):
        route = _route(_Table(top.source, f"routes[{i}]", item), shard_map)
        for other in routes:
            if other.path.text == route.path.text and _overlap(other.methods, route.methods):
                raise ConfigError(
                    top.source,
                    f"{route.key}.path",
                    f"{route.path.text!r} with these methods is already served by {other.key}",
                )
        routes.append(route)
    return tuple(routes)


def _overlap(a: frozenset[str] | None, b: frozenset[str] | None) -> bool:
    return a is None or b is None or bool(a & b)


def _route(t: _Table, shard_map: Mapping[str, Any]) -> Route:
    text = t.string("path")
    try:
        path = PathTemplate.parse(text)
    except ValueError as e:
        t.fail("path", str(e))
    mode = t.string("mode")
    if mode not in MODES:
        t.fail("mode", f"must be one of {', '.join(MODES)}, not {mode!r}")
    methods = _methods(t)
    id_fields = _paths(t, "id_fields")
    route: Route
    if mode == "scatter":
        methods = _only(t, methods, {"GET"}, "a scatter route answers GET only; "
                        "writes are never fanned out")
        route = Route(path, mode, methods, t.key, id_fields, scatter=_scatter_options(t))
    elif mode == "find":
        methods = _only(t, methods, {"GET", "HEAD"}, "a find route asks every shard, "
                        "so it answers GET and HEAD only")
        _no_owner_keys(t)
        route = Route(path, mode, methods, t.key, id_fields, relay=_relay_options(t),
                      find=_find_options(t))
    else:
        route = Route(path, mode, methods, t.key, id_fields, relay=_relay_options(t),
                      owner=_owner_options(t, path, shard_map))
    t.done()
    return route


def _methods(t: _Table) -> frozenset[str] | None:
    methods = t.strings("methods", None)
    if methods is None:
        return None
    methods = [m.upper() for m in methods]
    for m in methods:
        if m not in HTTP_METHODS:
            t.fail("methods", f"{m!r} is not one of {', '.join(HTTP_METHODS)}")
    return frozenset(methods)


def _scatter_options(t: _Table) -> ScatterOptions:
    d = ScatterOptions(items="")
    o = ScatterOptions(
        items=t.string("items"),
        sort=_paths(t, "sort"),
        default_sort=t.string("default_sort", None),
        sort_param=t.string("sort_param", d.sort_param),
        limit_param=t.string("limit_param", d.limit_param),
        offset_param=t.string("offset_param", d.offset_param),
        max_limit=t.number("max_limit", None, integer=True),
        default_limit=t.number("default_limit", None, integer=True),
        total=t.string("total", None),
        partial=t.boolean("partial", True),
    )
    if o.default_sort and o.sort_path(o.default_sort.removeprefix("-")) is None:
        t.fail("default_sort", f"{o.default_sort!r} is not one of the route's sort keys")
    if o.default_limit and o.max_limit and o.default_limit > o.max_limit:
        t.fail("default_limit", f"is above max_limit ({o.max_limit})")
    return o


def _relay_options(t: _Table) -> RelayOptions:
    value = t.get("item", "data")
    if not isinstance(value, str):
        t.fail("item", f"must be a dotted path or \"\" for the whole body, not {_kind(value)}")
    return RelayOptions(item=_path(t, "item", value) if value else None,
                        max_body=t.number("max_body", None, integer=True))


def _find_options(t: _Table) -> FindOptions:
    d = FindOptions()
    return FindOptions(cache_size=t.number("cache_size", d.cache_size, integer=True),
                       cache_ttl=t.number("cache_ttl", d.cache_ttl))


_OWNER_KEYS = ("global_id", "shard_key", "shard_key_body")


def _no_owner_keys(t: _Table) -> None:
    for name in _OWNER_KEYS:
        if t.string(name, None):
            t.fail(name, "a find route has no owner key: it asks every shard "
                   "(use mode = \"route\" when the owner is known)")


def _owner_options(t: _Table, path: PathTemplate, shard_map: Mapping[str, Any]) -> OwnerOptions:
    """How a route request finds its shard; check the keys agree."""
    given = {name: t.string(name, None) for name in _OWNER_KEYS}
    owners = [name for name in _OWNER_KEYS if given[name]]
    if len(owners) != 1:
        t.fail(owners[1] if owners else "shard_key",
               "a route needs exactly one of global_id, shard_key, shard_key_body "
               f"to name its owning shard (has {', '.join(owners) or 'none'})")
    for name in ("global_id", "shard_key"):
        if given[name] and given[name] not in path.params:
            t.fail(name, f"{given[name]!r} is not a parameter of path {path.text!r}")
    key = given["shard_key"]
    if key and key not in shard_map:
        t.fail("shard_key", f"there is no [shard_map.{key}] table saying "
               "which shard owns which key")
    body = given["shard_key_body"]
    return OwnerOptions(global_id=given["global_id"], shard_key=key,
                        shard_key_body=_path(t, "shard_key_body", body) if body else None)


def _only(t: _Table, methods: frozenset[str] | None, allowed: set[str],
          why: str) -> frozenset[str]:
    if methods is None:
        return frozenset(allowed)
    if methods - allowed:
        t.fail("methods", why)
    return methods


def _path(t: _Table, name: str, text: str) -> DottedPath:
    try:
        return DottedPath.parse(text)
    except ValueError as e:
        t.fail(name, str(e))


def _paths(t: _Table, name: str) -> tuple[DottedPath, ...]:
    """A list of dotted JSON paths (``"price.amount"``); may be empty."""
    value = t.get(name, [])
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        t.fail(name, "must be a list of dotted paths like 'price.amount'")
    return tuple(_path(t, name, p) for p in value)
