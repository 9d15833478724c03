"""Load and validate the gateway's TOML config into immutable objects.

Everything is checked before the gateway listens, so a typo never turns into
a half-working daemon: every problem is reported as ``file: key: problem``,
all of a file's problems at once, so that one run is enough to fix them.
A loaded :class:`Config` is never mutated; a reload builds a new one.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType
from typing import Any, Callable, Collection, Iterable, Mapping, NoReturn, TypeVar
from urllib.parse import urlsplit

from . import split
from .directory import BadEntry, OwnerTable, parse_owner
from .paths import DottedPath, PathTemplate

MODES = ("scatter", "route", "find", "any")
FALLBACK_MODES = ("404", "any", "find")
UNKNOWN_KEY = ("404", "find")  # a read for a key no directory entry names
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
SHARD_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
# A systemd credential is a file name in $CREDENTIALS_DIRECTORY: no '/', not "." or "..".
CREDENTIAL_NAME = re.compile(r"^(?!\.\.?\Z)[A-Za-z0-9_.-]{1,255}\Z")
SECRET_SOURCES = ("secret_env", "secret_file", "secret_credential")
DEFAULT_LISTEN = "tcp:8080:interface=127.0.0.1"
LOG_FORMATS = ("text", "json")
SHAREABLE = ("tcp", "tcp6", "systemd")  # endpoint kinds several workers can share


class ConfigError(Exception):
    """Config problems, phrased so that ops can fix them without reading code.

    ``source``, ``key`` and ``problem`` are the first problem's; ``problems``
    holds every problem found, each a one-problem ConfigError (just ``self``
    when there is one). ``str()`` is one ``FILE: KEY: PROBLEM`` line per
    problem, in the order found.
    """

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source, self.key, self.problem = source, key, problem
        self.problems: tuple[ConfigError, ...] = (self,)
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {problem}")

    @classmethod
    def combine(cls, errors: Iterable[ConfigError]) -> ConfigError:
        """One error carrying every problem of ``errors`` (at least one)."""
        problems = tuple(p for e in errors for p in e.problems)
        if len(problems) == 1:
            return problems[0]
        first = problems[0]
        error = cls(first.source, first.key, first.problem)
        error.problems = problems
        error.args = ("\n".join(str(p) for p in problems),)
        return error


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
    gc_threshold: int = 50_000  # the collector's first threshold once serving (0: CPython's)
    item_parser: str = "auto"  # list items: the native splitter when built, or "native"/"python"
    log_format: str = "text"  # or "json": one JSON object per line
    max_header_bytes: int = 16384  # request line plus headers (414, 431 above)
    max_headers: int = 100  # header fields per request (431 above)
    header_timeout: float = 10.0  # seconds for a request's head to arrive (408 after)
    trusted_proxies: tuple[str, ...] = ()  # networks whose X-Forwarded-*/Forwarded are kept
    hide_headers: tuple[str, ...] = ("server", "x-powered-by", "x-aspnet-version",
                                     "x-aspnetmvc-version")  # dropped from shard answers


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
    ca_file: str | None = None  # verify https shards against these CAs, not the system's
    client_cert: str | None = None  # a certificate (PEM) to present to https shards ...
    client_key: str | None = None  # ... and its key, when not in the same file
    client: str = "lean"  # the shards' GETs: "lean" (llhttp, upstream/lean.py) or "twisted"


@dataclass(frozen=True)
class OutlierConfig:
    consecutive_failures: int = 5
    base_ejection: float = 1.0
    max_ejection: float = 30.0


@dataclass(frozen=True)
class AdminConfig:
    """The gateway's own endpoints (/livez, /readyz, /healthz, /metrics)."""

    # Their own listen endpoint; None: on the main one, before the routes.
    listen: str | None = None

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
class AuthConfig:
    """Partner API keys ([auth]); the gateway is open without it."""

    keys: Any  # a shardstream.core.keys.KeyStore, read from keys_file or keys_credential
    header: str | None = None  # a header that may carry the key, besides Authorization
    partner_header: str = "X-Shardstream-Partner"  # the partner's name, to the shards


@dataclass(frozen=True)
class RateLimitConfig:
    """Where partners' rate limits are kept ([rate_limit]); the limits
    themselves (rate, burst, concurrency) are each partner's, in the keys file."""

    backend: str = "local"  # or "redis": one bucket per partner for every worker and host
    redis_url: str = "redis://127.0.0.1:6379/0"
    on_redis_down: str = "open"  # or "closed": 503 while Redis does not answer
    timeout: float = 0.05  # seconds a Redis check may take before Redis counts as down


@dataclass(frozen=True)
class TLSConfig:
    """The gateway listens with TLS ([tls]): on server.listen's address."""

    cert: str  # the certificate chain, PEM
    key: str  # its private key, PEM
    client_ca: str | None = None  # require partner certificates signed by these CAs
    min_version: str = "1.2"


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
    # (header, value) sent on every request to this shard ([shards.NAME.credentials]);
    # never logged, never shown.
    credential: tuple[str, bytes] | None = field(default=None, repr=False)
    accepts_new: bool = True  # open for new tenants placed by hashing
    weight: float = 1.0  # its share of new tenants, relative to the others



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
    # A query (or path) parameter naming shard keys: only their owners are asked.
    target_param: str | None = None
    # The item field naming its tenant: items of a tenant the directory puts
    # on another shard are dropped from this shard's stream (tenant moves).
    owner_field: DottedPath | None = None

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
    # A write for a key no shard owns: "reject", "hash" or "shard:NAME".
    placement: str = "reject"

    @property
    def kind(self) -> str | None:
        """The directory key kind this route looks its owner up in."""
        if self.shard_key is not None:
            return self.shard_key
        return self.shard_key_body.text if self.shard_key_body is not None else None


@dataclass(frozen=True)
class FindOptions:
    """A find route's owner cache."""

    cache_size: int = 10000
    cache_ttl: float = 300.0


@dataclass(frozen=True)
class DirectoryConfig:
    """The owners of one key kind: inline (``[shard_map.KIND]``), a file, or a
    Redis hash (``[directory.KIND]``)."""

    kind: str
    table: OwnerTable | None = None  # inline entries
    file: str | None = None
    redis_url: str | None = None
    redis_key: str = ""  # the hash; default "shardstream:KIND"
    cache_ttl: float = 1.0  # Redis lookups remembered this long
    timeout: float = 0.25  # one Redis round trip, at most
    unknown: str = "404"  # a read for a key no entry names: "404" or "find"
    retry_after: int = 2  # a write for a tenant being moved: 503 with this Retry-After
    find_cache_size: int = 100000  # owners found by asking every shard ("find")
    find_cache_ttl: float = 300.0


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
    auth: AuthConfig | None = None
    rate_limit: RateLimitConfig = RateLimitConfig()
    tls: TLSConfig | None = None
    directory: Mapping[str, DirectoryConfig] = field(
        default_factory=lambda: MappingProxyType({})
    )
    fallback: Route | None = None  # [fallback]: the route of a path no route names
    # HMAC key for list cursors; None: a random one per process (see [cursor]).
    cursor_secret: bytes | None = field(default=None, repr=False)

    def max_body(self, route: Route | None) -> int:
        if route is not None and route.relay is not None and route.relay.max_body is not None:
            return route.relay.max_body
        return self.server.max_body

    @property
    def shard_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.shards)

    def shard(self, name: str) -> Shard:
        for shard in self.shards:
            if shard.name == name:
                return shard
        raise KeyError(name)


T = TypeVar("T")


class _Invalid(Exception):
    """The part under validation has a problem, already noted: skip its rest."""


def _check(validate: Callable[[], T], fallback: T) -> T:
    """Validate one independent part of the file (a table, a shard, a route).

    Its problems are noted where they are found; on one that stops it, the
    fallback is returned, so that the parts after it are still checked and
    one run reports every problem of the file.
    """
    try:
        return validate()
    except _Invalid:
        return fallback


class _Table:
    """One TOML table under validation; remembers its key path for messages.

    Every table of a file notes its problems in the file's one ``problems``
    list. ``fail`` notes one and stops the table (see :func:`_check`). In a
    ``lenient`` table (one whose keys are independent, such as [server]) a
    bad key with a default is noted and the default used, so that each bad
    key is reported; ``done`` then stops the table before the checks across
    its keys, which therefore only ever see valid values.
    """

    def __init__(self, source: str, key: str, data: Any, problems: list[ConfigError],
                 lenient: bool = False) -> None:
        self.source, self.key, self.problems, self.lenient = source, key, problems, lenient
        self.noted = 0  # this table's own problems
        if not isinstance(data, dict):
            self.fail("", f"must be a table, not {_kind(data)}")
        self.data: dict[str, Any] = data
        self.seen: set[str] = set()

    def path(self, name: str) -> str:
        if not name:
            return self.key
        return f"{self.key}.{name}" if self.key else name

    def note(self, name: str, problem: str) -> None:
        self.problems.append(ConfigError(self.source, self.path(name), problem))
        self.noted += 1

    def fail(self, name: str, problem: str) -> NoReturn:
        self.note(name, problem)
        raise _Invalid

    def bad(self, name: str, problem: str, default: Any) -> Any:
        """A key's bad value: the default in a lenient table (noted), else fail."""
        if not self.lenient or default is ...:
            self.fail(name, problem)
        self.note(name, problem)
        return default

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
            return self.bad(name, f"must be a non-empty string, not {_kind(value)}", default)
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
            return self.bad(name, f"must be {what}, not {_kind(value)}", default)
        if minimum is None and value <= 0:
            return self.bad(name, f"must be greater than 0, not {value}", default)
        if minimum is not None and value < minimum:
            return self.bad(name, f"must be at least {minimum}, not {value}", default)
        if maximum is not None and value > maximum:
            return self.bad(name, f"must be at most {maximum}, not {value}", default)
        return value if integer else float(value)

    def choice(self, name: str, options: Collection[str], default: str) -> str:
        """One of a few words."""
        value = self.get(name, default)
        if value not in options:
            return str(self.bad(name, f"must be one of {', '.join(map(repr, options))}, "
                                f"not {value!r}", default))
        return str(value)

    def boolean(self, name: str, default: bool) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            return bool(self.bad(name, f"must be true or false, not {_kind(value)}", default))
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
            return self.bad(name, "must be a non-empty list of non-empty strings", default)
        return value

    def table(self, name: str, required: bool = False, lenient: bool = False) -> "_Table":
        value = self.get(name, ... if required else {})
        return _Table(self.source, self.path(name), value, self.problems, lenient)

    def done(self) -> None:
        """Note every unknown key; stop if this table has any problem."""
        known = ", ".join(sorted(self.seen))
        for name in sorted(set(self.data) - self.seen):
            self.note(name, f"unknown key (known keys here: {known})")
        if self.noted:
            raise _Invalid


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
    return read(path, check_listen)[0]


def read(path: str, check_listen: ListenCheck | None = None) -> tuple[Config, bytes]:
    """:func:`load`, and the bytes it was made from (to hand on as they were)."""
    raw = _read_file(path)
    return loads(raw, path, check_listen), raw


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(path, "", f"cannot read: {e.strerror or e}") from None


def loads(raw: bytes, path: str, check_listen: ListenCheck | None = None) -> Config:
    """Validate a config file's bytes; errors name ``path``."""
    return parse(_decode(raw, path), path, check_listen)


def _decode(raw: bytes, path: str) -> dict[str, Any]:
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(path, "", f"invalid TOML: not UTF-8 ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, "", f"invalid TOML: {e}") from None


def route_paths(path: str) -> set[str]:
    """The route paths of a config file, validated as at start, except for
    its [auth] table: that names the keys file, which may not exist yet (the
    first key is being added) and is what the caller checks against these."""
    data = _decode(_read_file(path), path)
    data.pop("auth", None)
    return {route.path.text for route in parse(data, path).routes}


def parse(data: dict[str, Any], source: str = "<config>",
          check_listen: ListenCheck | None = None) -> Config:
    """Validate an already-decoded config mapping (used by load and the demo).

    Each part is validated on its own and the ConfigError raised at the end
    carries every problem found. A part that refers to another (routes to
    [shard_map], [shard_map] and [admin] to [shards]) is checked against the
    names the other declares, valid or not, so one mistake is reported once.
    """
    problems: list[ConfigError] = []
    top = _Table(source, "", data, problems)
    server = _check(lambda: _server(top.table("server", lenient=True), check_listen),
                    ServerConfig())
    upstream = _check(lambda: _upstream(top.table("upstream", lenient=True)), UpstreamConfig())
    shards: tuple[Shard, ...] = _check(lambda: _shards(top.table("shards", required=True)), ())
    shard_names = _declared(top, "shards") or None  # none: [shards] itself is the problem
    directory: Mapping[str, DirectoryConfig] = _check(
        lambda: _directories(top, shard_names), MappingProxyType({}))
    kinds = _kinds(top)
    routes: tuple[Route, ...] = _check(lambda: _routes(top, kinds, shard_names), ())
    fallback = _check(lambda: _fallback(top.table("fallback")), None)
    _check(lambda: _placements(top, shards, routes), None)
    secret = _check(lambda: _cursor(top.table("cursor", lenient=True)), None)
    health = _check(lambda: _health(top.table("health", lenient=True)), HealthConfig())
    outlier = _check(lambda: _outlier(top.table("outlier", lenient=True)), OutlierConfig())
    admin = _check(lambda: _admin(top.table("admin", lenient=True), len(shard_names) if shard_names else None,
                                  check_listen, server),
                   AdminConfig())
    auth = _check(lambda: _auth(top.table("auth", lenient=True), routes)
                  if "auth" in top.data else None, None)
    rate_limit = _check(lambda: _rate_limit(top.table("rate_limit", lenient=True)),
                        RateLimitConfig())
    tls = _check(lambda: _tls(top.table("tls", lenient=True), server), None)
    _check(top.done, None)
    if problems:
        raise ConfigError.combine(problems)
    return Config(source, server, upstream, shards, routes, directory=directory,
                  fallback=fallback, cursor_secret=secret, health=health, outlier=outlier,
                  admin=admin, auth=auth, rate_limit=rate_limit, tls=tls)


def _kinds(top: _Table) -> set[str] | None:
    """The key kinds some table declares owners of (None: unknown, not checked)."""
    inline, tables = _declared(top, "shard_map"), _declared(top, "directory")
    if inline is None or tables is None:
        return None
    return inline | tables


def _declared(top: _Table, name: str) -> set[str] | None:
    """The names of the tables under top-level ``[name]``, valid or not
    (None: ``name`` is not a table, so nothing can be checked against it)."""
    value = top.data.get(name, {})
    return set(value) if isinstance(value, dict) else None


def _admin(t: _Table, shards: int | None, check_listen: ListenCheck | None = None,
           server: ServerConfig | None = None) -> AdminConfig:
    """``shards``: how many are configured (None: unknown, [shards] is bad)."""
    listen = t.string("listen", None)
    if listen is not None:
        problem = check_listen(listen) if check_listen is not None else None
        if problem:
            t.note("listen", problem)
        elif (server is not None and listen == server.listen
              and not re.match(r"^[a-z0-9]+:0(:|\Z)", listen)):  # port 0: any free one
            t.note("listen", "is server.listen: give the admin endpoint its own port, or "
                   "leave admin.listen out to serve it on the main endpoint")
        elif (server is not None and server.workers != 1
              and listen.split(":", 1)[0] not in SHAREABLE):
            t.note("listen", "with several workers the admin endpoint is shared like "
                   "server.listen: a tcp: or systemd: endpoint")
    value = t.get("ready_min_shards", AdminConfig.ready_min_shards)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        value = t.bad("ready_min_shards", "must be a count of shards (a whole number) or a share of "
               f"them (a number between 0 and 1, such as 0.5), not {_kind(value)}",
                      AdminConfig.ready_min_shards)
    if isinstance(value, int):
        if value < 1 or (shards is not None and value > shards):
            most = "the number of shards" if shards is None else f"the {shards} configured"
            value = t.bad("ready_min_shards", f"a count of shards must be between 1 and "
                          f"{most}, not {value}", AdminConfig.ready_min_shards)
    elif not 0 < value <= 1:
        value = t.bad("ready_min_shards", f"a share of the shards must be above 0 and at most "
                      f"1, not {value}", AdminConfig.ready_min_shards)
    t.done()
    return AdminConfig(listen=listen, ready_min_shards=value)


def _health(t: _Table) -> HealthConfig:
    d = HealthConfig()
    path = t.string("path", None)
    if path is not None and not path.startswith("/"):
        path = t.bad("path", f"{path!r} must start with '/'", None)
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
    """The cursor HMAC secret from the one source [cursor] names (None: none)."""
    given = {name: value for name in SECRET_SOURCES if (value := t.string(name, None))}
    t.done()
    if len(given) > 1:
        t.fail(list(given)[1], f"set only one of {', '.join(SECRET_SOURCES)} "
               f"(this file sets {' and '.join(given)})")
    if not given:
        return None
    [(name, value)] = given.items()
    secret = _read_secret(t, name, value)
    if len(secret) < 16:
        t.fail(name, f"the secret must be at least 16 bytes, not {len(secret)}")
    return secret


def _pem(t: _Table, name: str, default: Any = ...) -> Any:
    """A PEM file's path, readable now."""
    path = t.string(name, default)
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError as e:
        return t.bad(name, f"cannot read {path}: {e.strerror or e}", None)
    if b"-----BEGIN" not in head:
        return t.bad(name, f"{path} is not a PEM file", None)
    return path


def _tls(t: _Table, server: ServerConfig) -> TLSConfig | None:
    if not t.data:
        return None
    version = t.get("min_version", TLSConfig.min_version)
    if version not in ("1.2", "1.3"):
        version = t.bad("min_version", f'must be "1.2" or "1.3", not {version!r}', "1.2")
    client_ca = _pem(t, "client_ca", None)
    cert = _pem(t, "cert", None) if "cert" in t.data else t.bad("cert", "is required", None)
    key = _pem(t, "key", None) if "key" in t.data else t.bad("key", "is required", None)
    t.done()
    if server.listen.split(":", 1)[0] not in ("tcp", "tcp6", "systemd", "unix"):
        t.fail("", f"[tls] wraps server.listen, which must then be a plain endpoint "
               f"(tcp:, systemd:), not {server.listen.split(':', 1)[0]}:")
    return TLSConfig(cert=cert, key=key, client_ca=client_ca, min_version=version)


def _rate_limit(t: _Table) -> RateLimitConfig:
    d = RateLimitConfig()
    backend = t.get("backend", d.backend)
    if backend not in ("local", "redis"):
        backend = t.bad("backend", f'must be "local" or "redis", not {backend!r}', d.backend)
    url = t.string("redis_url", d.redis_url)
    problem = _redis_url_problem(url)
    if problem is not None:
        url = t.bad("redis_url", problem, d.redis_url)
    down = t.get("on_redis_down", d.on_redis_down)
    if down not in ("open", "closed"):
        down = t.bad("on_redis_down", f'must be "open" or "closed", not {down!r}',
                     d.on_redis_down)
    timeout = t.number("timeout", d.timeout, maximum=5)
    t.done()
    return RateLimitConfig(backend=backend, redis_url=url, on_redis_down=down, timeout=timeout)


HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}\Z")


def _auth(t: _Table, routes: tuple[Route, ...]) -> AuthConfig:
    """An [auth] table turns authentication on: even an empty one, which is
    then an error (a gateway meant to be closed must never run open)."""
    if not t.data:
        t.fail("keys_file", "is required: [auth] turns authentication on, and needs "
               "keys_file or keys_credential (remove [auth] to run without keys)")
    path_key = "keys_credential" if "keys_credential" in t.data else "keys_file"
    value = t.string(path_key)
    other = "keys_file" if path_key == "keys_credential" else "keys_credential"
    if other in t.data:
        t.fail(other, "set keys_file or keys_credential, not both")
    header = t.string("header", None)
    partner_header = t.string("partner_header", AuthConfig.partner_header)
    for name, h in (("header", header), ("partner_header", partner_header)):
        if h is not None and not HEADER_NAME.match(h):
            t.fail(name, f"{h!r} is not a header name (letters, digits and '-')")
    if header is not None and header.lower() in ("authorization", "cookie"):
        t.fail("header", "Authorization is always read; name another header or leave it out")
    t.done()
    raw = _read_secret(t, path_key, value)
    from . import keys as keys_mod

    source = value if path_key == "keys_file" else f"$CREDENTIALS_DIRECTORY/{value}"
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        t.fail(path_key, f"{source}: invalid TOML: {e}")
    try:
        store = keys_mod.parse(data, source, {r.path.text for r in routes})
    except ConfigError as e:
        t.problems.extend(e.problems)
        raise _Invalid from None
    return AuthConfig(keys=store, header=header, partner_header=partner_header)


def _read_secret(t: _Table, name: str, value: str) -> bytes:
    """The secret named by ``name = value`` (an environment variable, a file
    or a systemd credential); a file's is stripped."""
    if name.endswith("_env"):
        secret = os.environ.get(value)
        if not secret:
            t.fail(name, f"environment variable {value} is not set or empty")
        return secret.encode()
    path, hint = value, ""
    if name.endswith("_credential"):
        if not CREDENTIAL_NAME.match(value):
            t.fail(name, f"{value!r} is not a credential name (letters, digits, '_', '-' "
                   "and '.'; it is a file name in $CREDENTIALS_DIRECTORY)")
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            t.fail(name, f"CREDENTIALS_DIRECTORY is not set: not running under systemd with "
                   f"LoadCredential={value}:..., or set "
                   f"{name.replace('_credential', '_file')} instead")
        path = os.path.join(directory, value)
        hint = f" (is LoadCredential={value}:... in the unit?)"
    try:
        with open(path, "rb") as f:
            return f.read().strip()
    except OSError as e:
        t.fail(name, f"cannot read {path}: {e.strerror or e}{hint}")


def _server(t: _Table, check_listen: ListenCheck | None) -> ServerConfig:
    listen = t.string("listen", DEFAULT_LISTEN)
    problem = check_listen(listen) if check_listen is not None else None
    if problem:
        t.note("listen", problem)
    max_body = t.number("max_body", ServerConfig.max_body, integer=True)
    access_log = t.boolean("access_log", True)
    workers = t.get("workers", 1)
    if workers != "auto" and (isinstance(workers, bool) or not isinstance(workers, int)
                              or workers < 1):
        workers = t.bad("workers", f"must be a whole number >= 1 or \"auto\", not {workers!r}", 1)
    drain_timeout = t.number("drain_timeout", ServerConfig.drain_timeout)
    drain_delay = t.number("drain_delay", ServerConfig.drain_delay, minimum=0)
    write_buffer = t.number("write_buffer", ServerConfig.write_buffer, integer=True)
    merge_queue = t.number("merge_queue", ServerConfig.merge_queue, integer=True)
    gc_threshold = t.number("gc_threshold", ServerConfig.gc_threshold, integer=True, minimum=0)
    item_parser = t.choice("item_parser", split.CHOICES, ServerConfig.item_parser)
    if item_parser == "native" and not split.NATIVE:
        item_parser = t.bad("item_parser", "\"native\" asks for the native item splitter, which "
                            "this installation has not built (no C compiler when it was "
                            "installed?); use \"auto\" or \"python\"", ServerConfig.item_parser)
    max_header_bytes = t.number("max_header_bytes", ServerConfig.max_header_bytes,
                                integer=True, minimum=1024)
    max_headers = t.number("max_headers", ServerConfig.max_headers, integer=True)
    header_timeout = t.number("header_timeout", ServerConfig.header_timeout)
    proxies = t.get("trusted_proxies", [])
    if not isinstance(proxies, list) or not all(isinstance(p, str) for p in proxies):
        proxies = t.bad("trusted_proxies", "must be a list of addresses or networks", [])
    for network in proxies:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            proxies = t.bad("trusted_proxies", f"{network!r} is not an address or a network "
                            "such as 10.0.0.0/8", [])
            break
    hide = t.get("hide_headers", list(ServerConfig.hide_headers))
    if not isinstance(hide, list) or not all(isinstance(h, str) and HEADER_NAME.match(h)
                                             for h in hide):
        hide = t.bad("hide_headers", "must be a list of header names", [])
    log_format = t.choice("log_format", LOG_FORMATS, ServerConfig.log_format)
    t.done()
    if workers != 1 and listen.split(":", 1)[0] not in SHAREABLE:
        t.fail("workers", "several workers share a tcp: or systemd: listening socket; "
               "put TLS in front (the load balancer) or use one worker")
    return ServerConfig(listen=listen, max_body=max_body, access_log=access_log, workers=workers,
                        drain_timeout=drain_timeout, drain_delay=drain_delay,
                        write_buffer=write_buffer, merge_queue=merge_queue,
                        gc_threshold=gc_threshold, item_parser=item_parser,
                        log_format=log_format, max_header_bytes=max_header_bytes,
                        max_headers=max_headers, header_timeout=header_timeout,
                        trusted_proxies=tuple(str(ipaddress.ip_network(n, strict=False))
                                              for n in proxies),
                        hide_headers=tuple(h.lower() for h in hide))


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
        ca_file=_pem(t, "ca_file", None),
        client_cert=_pem(t, "client_cert", None),
        client_key=_pem(t, "client_key", None),
        client=t.choice("client", ("lean", "twisted"), d.client),
    )
    t.done()
    if up.client_key is not None and up.client_cert is None:
        t.fail("client_key", "is the key of client_cert, which is not set")
    return up


def _shards(t: _Table) -> tuple[Shard, ...]:
    """The valid shards; each shard's problems are its own."""
    if not t.data:
        t.fail("", "at least one shard is required, e.g. [shards.s1] urls = [...]")
    shards = [_check(partial(_shard, t, name), None) for name in t.data]
    return tuple(shard for shard in shards if shard is not None)


def _shard(shards: _Table, name: str) -> Shard:
    t = shards.table(name)
    if not SHARD_NAME.match(name):
        shards.fail(name, "a shard name may only use letters, digits, '_' and '-'")
    urls: list[str] = []
    for url in t.strings("urls"):
        problem = _url_problem(url)
        if problem:
            t.note("urls", problem)
        elif url.rstrip("/") in urls:
            t.note("urls", f"{url.rstrip('/')!r} is listed twice (replicas must be distinct)")
        else:
            urls.append(url.rstrip("/"))
    credential = _credential(t.table("credentials")) if "credentials" in t.data else None
    accepts_new = t.boolean("accepts_new", True)
    weight = t.number("weight", 1.0)
    t.done()
    return Shard(name=name, urls=tuple(urls), credential=credential, accepts_new=accepts_new,
                 weight=weight)


_VALUE_KEYS = ("value_env", "value_file", "value_credential")


def _credential(t: _Table) -> tuple[str, bytes]:
    """A shard's own credential: a header and where its value is (never in
    the config itself)."""
    header = t.string("header")
    if not HEADER_NAME.match(header):
        t.fail("header", f"{header!r} is not a header name (letters, digits and '-')")
    given = [k for k in _VALUE_KEYS if k in t.data]
    for key in given:
        t.string(key)
    t.done()
    if len(given) != 1:
        t.fail("", "set exactly one of " + ", ".join(_VALUE_KEYS)
               + (f" (this table sets {' and '.join(given)})" if given else ""))
    value = _read_secret(t, given[0], t.data[given[0]])
    if not value or b"\n" in value or b"\r" in value:
        t.fail(given[0], "the value must be one non-empty line")
    return header, value


def _credentials_problem(url: str, instead: str) -> str:
    masked = re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)?.*@", r"\1***@", url, flags=re.DOTALL)
    return (f"{masked!r} must not contain a user or password: credentials in URLs "
            f"end up in logs; {instead}")


def _redis_url_problem(url: str, schemes: tuple[str, ...] = ("redis",)) -> str | None:
    """What is wrong with a Redis URL (None: nothing); never shows a password."""
    if "@" in url:
        return _credentials_problem(url, "keep Redis on a private network or loopback")
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError as e:
        return f"{url!r} is not a valid URL ({e})"
    db = parts.path.strip("/")
    if parts.scheme not in schemes or not parts.hostname or db and not db.isdigit():
        return f"{url!r} must be {'|'.join(schemes)}://HOST[:PORT][/DB]"
    return None


def _url_problem(url: str) -> str | None:
    """What is wrong with a shard URL (None: nothing).

    Any '@' is taken for credentials, and checked first, so that no text
    here ever shows a password: a base URL's path has no use for '@', and a
    password with an unescaped '/' or '#' would not parse as one.
    """
    if "@" in url:
        return _credentials_problem(url, "authenticate with a header or TLS instead")
    if re.search(r"\s", url):
        return f"{url!r} must not contain whitespace (spaces, tabs or newlines)"
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError as e:
        return f"{url!r} is not a valid URL ({e})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} must be an http:// or https:// URL with a host"
    if parts.query or parts.fragment:
        return f"{url!r} must not have a query or fragment"
    return None


def _directories(top: _Table, shard_names: Collection[str] | None
                 ) -> Mapping[str, DirectoryConfig]:
    """``[shard_map.KIND]`` (inline) and ``[directory.KIND]`` (a file or Redis);
    ``shard_names``: the shards declared (None: unknown, not checked)."""
    out: dict[str, DirectoryConfig] = {}
    inline = top.table("shard_map")
    for kind in inline.data:
        mt = _check(partial(inline.table, kind), None)
        if mt is None:
            continue
        entries = []
        for value, owner in mt.data.items():
            if not isinstance(owner, str):
                mt.note(value, f"must name a shard (a string), not {_kind(owner)}")
                continue
            try:
                entries.append((value, parse_owner(owner, shard_names)))
            except BadEntry as e:
                mt.note(value, str(e))
        out[kind] = DirectoryConfig(kind, table=OwnerTable(entries))
    tables = top.table("directory")
    for kind in tables.data:
        if kind in out:
            tables.note(kind, f"[shard_map.{kind}] already says who owns {kind}: "
                        "use one of the two")
            continue
        found = _check(partial(_directory, tables, kind), None)
        if found is not None:
            out[kind] = found
    return MappingProxyType(out)


def _directory(tables: _Table, kind: str) -> DirectoryConfig:
    t = tables.table(kind)
    d = DirectoryConfig(kind)
    file, url = t.string("file", None), t.string("redis_url", None)
    if (file is None) == (url is None):
        t.fail("", "set exactly one of file (a CSV or JSON-lines file) and redis_url")
    problem = _redis_url_problem(url, ("redis", "rediss")) if url is not None else None
    if problem is not None:
        t.note("redis_url", problem)
    if file is not None and not os.path.isfile(file):
        t.note("file", f"{file!r} is not a readable file")
    unknown = t.string("unknown", d.unknown)
    if unknown not in UNKNOWN_KEY:
        t.note("unknown", f"must be one of {', '.join(UNKNOWN_KEY)}, not {unknown!r}")
    out = DirectoryConfig(
        kind, file=file, redis_url=url,
        redis_key=t.string("redis_key", f"shardstream:{kind}"),
        cache_ttl=t.number("cache_ttl", d.cache_ttl),
        timeout=t.number("timeout", d.timeout),
        unknown=unknown,
        retry_after=t.number("retry_after", d.retry_after, integer=True),
        find_cache_size=t.number("find_cache_size", d.find_cache_size, integer=True),
        find_cache_ttl=t.number("find_cache_ttl", d.find_cache_ttl),
    )
    if file is not None:
        for name in ("redis_key", "cache_ttl", "timeout"):
            if name in t.data:
                t.note(name, "is for a Redis directory (redis_url), not a file")
    t.done()
    return out


def _fallback(t: _Table) -> Route | None:
    """[fallback]: what a path no route names gets (None: 404)."""
    mode = t.string("mode", "404")
    if mode not in FALLBACK_MODES:
        t.fail("mode", f"must be one of {', '.join(FALLBACK_MODES)}, not {mode!r}")
    t.done()
    if mode == "404":
        return None
    path = PathTemplate.parse("/", prefix=True)
    methods = frozenset({"GET", "HEAD"}) if mode == "find" else None
    return Route(path, mode, methods, "fallback", relay=RelayOptions(item=None),
                 find=FindOptions() if mode == "find" else None)


def _placements(top: _Table, shards: tuple[Shard, ...], routes: tuple[Route, ...]) -> None:
    """A route that places new tenants needs a shard to place them on."""
    names = {s.name for s in shards}
    for route in routes:
        placement = route.owner.placement if route.owner is not None else "reject"
        if placement == "hash" and shards and not any(s.accepts_new for s in shards):
            top.note(f"{route.key}.placement", "no shard accepts new tenants "
                     "(every [shards.NAME] has accepts_new = false)")
        elif placement.startswith("shard:") and names and placement[6:] not in names:
            top.note(f"{route.key}.placement", f"names shard {placement[6:]!r}, which is "
                     "not in [shards]")


def _routes(top: _Table, kinds: Collection[str] | None,
            shard_names: Collection[str] | None = None) -> tuple[Route, ...]:
    """The valid routes; each route's problems are its own. ``kinds``: the key
    kinds a directory declares (None: unknown, not checked)."""
    raw = top.get("routes", None)
    if not isinstance(raw, list) or not raw:
        top.fail("routes", "at least one [[routes]] entry is required")
    routes: list[Route] = []
    for i, item in enumerate(raw):
        route = _check(partial(_route, top, f"routes[{i}]", item, kinds), None)
        if route is None:
            continue
        other = next((o for o in routes if o.path == route.path
                      and _overlap(o.methods, route.methods)), None)
        if other is not None:
            top.note(f"{route.key}.{'prefix' if route.path.prefix else 'path'}",
                     f"{route.path.text!r} with these methods is already served by {other.key}")
        else:
            routes.append(route)
    return tuple(routes)


def _overlap(a: frozenset[str] | None, b: frozenset[str] | None) -> bool:
    return a is None or b is None or bool(a & b)


def _route(top: _Table, key: str, data: Any, kinds: Collection[str] | None) -> Route:
    t = _Table(top.source, key, data, top.problems)
    try:
        return _route_of(t, kinds)
    except _Invalid:
        # Stopped before its mode's keys were read: a key no route knows is
        # a typo all the same, and worth saying in the same run.
        for name in sorted(set(t.data) - t.seen - _route_keys()):
            t.note(name, "unknown key")
        raise


def _route_keys() -> set[str]:
    """Every key some route accepts: the fields of a route and its options."""
    from dataclasses import fields

    names = {f.name for cls in (Route, ScatterOptions, RelayOptions, OwnerOptions, FindOptions)
             for f in fields(cls)}
    return (names | {"prefix"}) - {"key", "scatter", "relay", "owner", "find"}


def _route_path(t: _Table) -> PathTemplate:
    """``path`` (this path only) or ``prefix`` (every path under it)."""
    if ("path" in t.data) == ("prefix" in t.data):
        t.fail("path", "set exactly one of path (one path) and prefix (every path under it)")
    name = "path" if "path" in t.data else "prefix"
    text = t.string(name)
    if name == "prefix" and not text.endswith("/"):
        t.fail("prefix", f"{text!r} must end with '/' (it matches the paths under it)")
    try:
        return PathTemplate.parse(text, prefix=name == "prefix")
    except ValueError as e:
        t.fail(name, str(e))


def _route_of(t: _Table, kinds: Collection[str] | None) -> Route:
    path = _route_path(t)
    mode = t.string("mode")
    if mode not in MODES:
        t.fail("mode", f"must be one of {', '.join(MODES)}, not {mode!r}")
    methods = _methods(t)
    id_fields = _paths(t, "id_fields")
    route: Route
    if mode == "scatter":
        methods = _only(t, methods, {"GET"}, "a scatter route answers GET only; "
                        "writes are never fanned out")
        route = Route(path, mode, methods, t.key, id_fields,
                      scatter=_scatter_options(t, path, kinds))
    elif mode == "find":
        methods = _only(t, methods, {"GET", "HEAD"}, "a find route asks every shard, "
                        "so it answers GET and HEAD only")
        _no_owner_keys(t, "a find route has no owner key: it asks every shard "
                       "(use mode = \"route\" when the owner is known)")
        route = Route(path, mode, methods, t.key, id_fields, relay=_relay_options(t),
                      find=_find_options(t))
    elif mode == "any":
        if methods is None:
            methods = frozenset({"GET", "HEAD"})
        _no_owner_keys(t, "an any route has no owner: any one shard answers it")
        route = Route(path, mode, methods, t.key, id_fields, relay=_relay_options(t))
    else:
        route = Route(path, mode, methods, t.key, id_fields, relay=_relay_options(t),
                      owner=_owner_options(t, path, kinds))
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


def _scatter_options(t: _Table, path: PathTemplate, kinds: Collection[str] | None
                     ) -> ScatterOptions:
    d = ScatterOptions(items="")
    owner_field = t.string("owner_field", None)
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
        target_param=t.string("target_param", None),
        owner_field=_path(t, "owner_field", owner_field) if owner_field else None,
    )
    if o.default_sort and o.sort_path(o.default_sort.removeprefix("-")) is None:
        t.fail("default_sort", f"{o.default_sort!r} is not one of the route's sort keys")
    if o.default_limit and o.max_limit and o.default_limit > o.max_limit:
        t.fail("default_limit", f"is above max_limit ({o.max_limit})")
    for name, kind in (("target_param", o.target_param),
                       ("owner_field", o.owner_field.text if o.owner_field else None)):
        if kind and kinds is not None and kind not in kinds:
            t.fail(name, f"there is no [shard_map.{kind}] or [directory.{kind}] saying "
                   "which shard owns which key")
    if o.target_param and o.target_param in {o.sort_param, o.limit_param, o.offset_param,
                                             "sort", "limit", "offset", "cursor", "partial"}:
        t.fail("target_param", f"{o.target_param!r} is a list parameter of the gateway's")
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


def _no_owner_keys(t: _Table, why: str) -> None:
    for name in (*_OWNER_KEYS, "placement"):
        if t.string(name, None):
            t.fail(name, why)


def _owner_options(t: _Table, path: PathTemplate,
                   kinds: Collection[str] | None) -> OwnerOptions:
    """How a route request finds its shard; check the keys agree.
    ``kinds``: the key kinds a directory declares (None: unknown, not checked)."""
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
    if key and kinds is not None and key not in kinds:
        t.fail("shard_key", f"there is no [shard_map.{key}] or [directory.{key}] saying "
               "which shard owns which key")
    placement = t.string("placement", "reject")
    if placement not in ("reject", "hash") and not (
            placement.startswith("shard:") and SHARD_NAME.match(placement[6:])):
        t.fail("placement", f"must be \"reject\", \"hash\" or \"shard:NAME\", not {placement!r}")
    if placement != "reject" and given["global_id"]:
        t.fail("placement", "a global id names its shard: there is nothing to place")
    body = given["shard_key_body"]
    return OwnerOptions(global_id=given["global_id"], shard_key=key,
                        shard_key_body=_path(t, "shard_key_body", body) if body else None,
                        placement=placement)


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


def changes(old: Config, new: Config) -> list[str]:
    """What a reload changes, in words for the log (never a secret's value)."""
    out = []
    before = {s.name: s for s in old.shards}
    after = {s.name: s for s in new.shards}
    added = [n for n in after if n not in before]
    removed = [n for n in before if n not in after]
    moved = [n for n in after if n in before and after[n].urls != before[n].urls]
    if added:
        out.append("shards added: " + ", ".join(added))
    if removed:
        out.append("shards removed: " + ", ".join(removed))
    if moved:
        out.append("shard replicas changed: " + ", ".join(moved))
    recredentialed = [n for n in after if n in before
                      and after[n].credential != before[n].credential]
    if recredentialed:
        out.append("shard credentials changed: " + ", ".join(recredentialed))
    def label(r: Route) -> str:
        methods = ",".join(sorted(r.methods)) if r.methods else "any method"
        return f"{r.path.text} ({r.mode}, {methods})"

    old_routes = {label(r) for r in old.routes}
    new_routes = {label(r) for r in new.routes}
    if new_routes - old_routes:
        out.append("routes added: " + ", ".join(sorted(new_routes - old_routes)))
    if old_routes - new_routes:
        out.append("routes removed: " + ", ".join(sorted(old_routes - new_routes)))
    if old_routes == new_routes and old.routes != new.routes:
        out.append("route options changed")
    if old.directory != new.directory:
        out.append("directory changed")
    if old.fallback != new.fallback:
        out.append("[fallback] changed")
    for name in ("server", "upstream", "health", "outlier", "admin"):
        if getattr(old, name) != getattr(new, name):
            out.append(f"[{name}] changed")
    if old.cursor_secret != new.cursor_secret:
        out.append("cursor secret changed")
    return out


# For the other validators of the core (the keys file): one way to check a table.
Table = _Table
check = _check
