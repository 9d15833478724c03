"""The shard directory, carried out: who owns each key, for routing.

Routing asks :meth:`Directory.lookup`, which answers from memory or raises
:class:`~shardstream.core.directory.Pending`; the shell then calls
:meth:`Directory.resolve` (a Redis round trip, or recording a placement)
and runs the routing step again. Backends, one per key kind:

- a table (inline ``[shard_map.KIND]``, or a file loaded at start and, on a
  reload, in a thread while the old table keeps serving): placements of new
  keys are kept in the process, and agree across gateways because the
  rendezvous hash does;
- a Redis hash: lookups remembered for ``cache_ttl``; a new key is placed
  with HSETNX, so two gateways placing it at once agree on the first one's
  choice. While Redis does not answer, what the cache holds keeps serving
  (past its TTL) and a key it lacks is unknown (``unknown = "find"`` asks
  every shard).
"""

from __future__ import annotations

import os
import time
from typing import Any, Mapping

from cachetools import LRUCache, TTLCache
from twisted.internet import defer, threads
from twisted.logger import Logger

from ..core import directory as core
from ..core.config import Config, DirectoryConfig
from ..core.directory import Owner, OwnerTable, Pending
from ..core.errors import TryLater
from ..observe.metrics import metrics
from ..upstream import redis

log = Logger(namespace="shardstream")

# Keys a Redis directory remembers at most (each for cache_ttl).
REDIS_CACHE_SIZE = 1_000_000
# HSETNX, then the winner: the same answer to every gateway placing the key.
PLACE_SCRIPT = """
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
return redis.call('HGET', KEYS[1], ARGV[1])
"""


def _stamp(path: str) -> tuple[int, int, int]:
    """A file's identity for a reload: unchanged files are not read again."""
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


def read_file(config: Config, kind: str) -> OwnerTable:
    """One directory file, parsed (BadDirectoryFile names the file and lines)."""
    dc = config.directory[kind]
    assert dc.file is not None
    try:
        with open(dc.file, "rb") as f:
            data = f.read()
    except OSError as e:
        raise core.BadDirectoryFile(f"{dc.file}: cannot read: {e.strerror or e}") from None
    return core.parse_file(data, dc.file, set(config.shard_names))


def read_files(config: Config, previous: "Directory | None" = None
               ) -> dict[str, tuple[OwnerTable, tuple[int, int, int]]]:
    """Every directory file of a config; a file unchanged since ``previous``
    read it is reused. Blocking: at start, or in a thread."""
    out = {}
    for kind, dc in config.directory.items():
        if dc.file is None:
            continue
        try:
            stamp = _stamp(dc.file)
        except OSError as e:
            raise core.BadDirectoryFile(f"{dc.file}: cannot read: {e.strerror or e}") from None
        old = previous._files.get(kind) if previous is not None else None
        if old is not None and old[1] == stamp and old[2] == dc.file:
            out[kind] = (old[0], stamp)
            continue
        started = time.monotonic()
        table = read_file(config, kind)
        log.info("directory {kind}: {n} keys from {file} in {s:.2f} s", kind=kind,
                 n=len(table), file=dc.file, s=time.monotonic() - started,
                 event="directory_loaded")
        out[kind] = (table, stamp)
    return out


def load_later(config: Config, previous: "Directory | None") -> "defer.Deferred[Any]":
    """:func:`read_files` in a thread: a reload never blocks requests."""
    return threads.deferToThread(read_files, config, previous)


class _TableOwners:
    """A table backend: the table, then the keys this process placed."""

    def __init__(self, table: OwnerTable, placed: dict[str, Owner] | None = None) -> None:
        self.table = table
        self.placed: dict[str, Owner] = placed if placed is not None else {}

    def lookup(self, kind: str, key: str) -> Owner | None:
        owner = self.table.get(key)
        return owner if owner is not None else self.placed.get(key)

    def fetch(self, keys: tuple[str, ...]) -> "defer.Deferred[None]":
        return defer.succeed(None)  # nothing to fetch: every answer is in memory

    def place(self, key: str, shard: str) -> "defer.Deferred[Owner]":
        return defer.succeed(self.placed.setdefault(key, Owner(shard)))

    def close(self) -> None:
        pass


class _RedisOwners:
    """A Redis hash backend, with an in-process cache of ``cache_ttl``."""

    def __init__(self, reactor: Any, dc: DirectoryConfig, shards: frozenset[str]) -> None:
        self.reactor, self.dc, self.shards = reactor, dc, shards
        assert dc.redis_url is not None
        self.redis = redis.connect(dc.redis_url, dc.timeout)
        self.reach = redis.Reachability(
            f"directory {dc.kind}", dc.redis_url,
            lambda: metrics().directory_redis_up.labels(dc.kind),
            "owners in the cache keep serving; other keys are unknown until it does")
        # key -> (owner or None, fresh until)
        self.cache: LRUCache[str, tuple[Owner | None, float]] = LRUCache(REDIS_CACHE_SIZE)

    def lookup(self, kind: str, key: str) -> Owner | None:
        hit = self.cache.get(key)
        if hit is None or hit[1] < self.reactor.seconds():
            raise Pending(kind, (key,))
        return hit[0]

    def _remember(self, key: str, value: Any) -> Owner | None:
        owner = None
        if value is not None:
            text = value.decode() if isinstance(value, bytes) else str(value)
            try:
                owner = core.parse_owner(text, self.shards)
            except core.BadEntry as e:
                log.warn("directory {kind}: Redis {hash} field {key}: {problem}; taken as "
                         "unknown", kind=self.dc.kind, hash=self.dc.redis_key, key=key,
                         problem=str(e))
        self.cache[key] = (owner, self.reactor.seconds() + self.dc.cache_ttl)
        return owner

    def _keep_serving(self, keys: tuple[str, ...]) -> None:
        """Redis is down: what the cache has serves on, the rest is unknown, for a TTL."""
        until = self.reactor.seconds() + self.dc.cache_ttl
        for key in keys:
            hit = self.cache.get(key)
            self.cache[key] = (hit[0] if hit else None, until)

    def fetch(self, keys: tuple[str, ...]) -> "defer.Deferred[None]":
        d = self.redis.hmget(self.dc.redis_key, list(keys))
        d.addTimeout(self.dc.timeout, self.reactor)

        def answered(values: list[Any]) -> None:
            self.reach.answered()
            metrics().directory_lookups.labels(self.dc.kind, "fetched").inc(len(keys))
            for key, value in zip(keys, values):
                self._remember(key, value)

        def failed(failure: Any) -> None:
            self.reach.failed(failure)
            metrics().directory_lookups.labels(self.dc.kind, "failed").inc(len(keys))
            self._keep_serving(keys)

        d.addCallbacks(answered, failed)
        return d

    def place(self, key: str, shard: str) -> "defer.Deferred[Owner | None]":
        d = self.redis.eval(PLACE_SCRIPT, keys=[self.dc.redis_key], args=[key, shard])
        d.addTimeout(self.dc.timeout, self.reactor)

        def answered(value: Any) -> Owner | None:
            self.reach.answered()
            return self._remember(key, value)

        def failed(failure: Any) -> None:
            self.reach.failed(failure)
            raise TryLater(f"the shard directory ({self.dc.kind}) cannot record where "
                           f"{key!r} goes now; try again", retry_after=1,
                           code="directory_unavailable")

        d.addCallbacks(answered, failed)
        return d

    def close(self) -> Any:
        return self.redis.disconnect()


class Directory:
    """The owners of every key kind of one config."""

    def __init__(self, reactor: Any, config: Config,
                 files: Mapping[str, tuple[OwnerTable, tuple[int, int, int]]] | None = None,
                 previous: "Directory | None" = None) -> None:
        self.reactor, self.config = reactor, config
        files = files or {}
        self._files = {kind: (table, stamp, config.directory[kind].file)
                       for kind, (table, stamp) in files.items()}
        old = previous._backends if previous is not None else {}
        old_dc = previous.config.directory if previous is not None else {}
        shards = frozenset(config.shard_names)
        self._backends: dict[str, _TableOwners | _RedisOwners] = {}
        self.found: dict[str, TTLCache[str, str]] = {}
        for kind, dc in config.directory.items():
            before = old.get(kind)
            if dc.redis_url is not None:
                keep = (before if isinstance(before, _RedisOwners) and old_dc[kind] == dc
                        and before.shards == shards else None)
                self._backends[kind] = keep if keep is not None else _RedisOwners(reactor, dc,
                                                                                  shards)
            else:
                table = dc.table if dc.table is not None else files[kind][0]
                placed = before.placed if isinstance(before, _TableOwners) else None
                self._backends[kind] = _TableOwners(table, placed)
                metrics().directory_keys.labels(kind).set(len(table))
            kept = previous.found.get(kind) if previous is not None else None
            self.found[kind] = kept if kept is not None else TTLCache(dc.find_cache_size,
                                                                      dc.find_cache_ttl)

    def lookup(self, kind: str, key: str) -> Owner | None:
        """The owner of a key (None: no entry); raises Pending when it must be fetched."""
        owner = self._backends[kind].lookup(kind, key)
        if owner is None:
            shard = self.found[kind].get(key)
            if shard is not None and shard in self.config.shard_names:
                return Owner(shard)
        return owner

    def remember_found(self, kind: str, key: str, shard: str) -> None:
        """``unknown = "find"``: the shard that had an unknown key, for next time."""
        self.found[kind][key] = shard
        metrics().directory_lookups.labels(kind, "found").inc()

    def resolve(self, pending: Pending) -> "defer.Deferred[Any]":
        """Make what ``pending`` asks for; the routing step can then run again."""
        backend = self._backends[pending.kind]
        if pending.place is not None:
            key, shard = pending.place
            d = backend.place(key, shard)

            def placed(owner: Owner | None) -> None:
                how = "hash" if self._placement_hashed(pending.kind) else "fixed"
                if owner is not None:
                    metrics().placements.labels(pending.kind, how, owner.shard).inc()
                    log.info("directory {kind}: {key} placed on {shard}", kind=pending.kind,
                             key=key, shard=owner.shard, event="placed")

            d.addCallback(placed)
            return d
        return backend.fetch(pending.keys)

    def _placement_hashed(self, kind: str) -> bool:
        return any(r.owner is not None and r.owner.kind == kind and r.owner.placement == "hash"
                   for r in self.config.routes)

    def close(self, successor: "Directory | None" = None) -> None:
        """Close the backends the successor does not keep."""
        kept = set(map(id, successor._backends.values())) if successor is not None else set()
        for backend in self._backends.values():
            if id(backend) not in kept:
                backend.close()
