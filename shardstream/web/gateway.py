"""Everything a request needs, built from one config: a reload builds a new
one for new requests while in-flight ones keep the one they started with."""

from __future__ import annotations

import orjson
from cachetools import TTLCache
from twisted.internet.task import LoopingCall

from ..core import openapi
from ..core.config import Config, Route
from ..core.routing import Router
from ..upstream.balancer import Balancer
from ..upstream.client import UpstreamClient
from ..upstream.health import HealthChecker
from .directory import Directory, read_files
from .limits import Limits


# Seconds between refreshes of the replica gauges (an ejection ends with time).
PUBLISH_INTERVAL = 1.0


class Gateway:
    """Everything a request needs, built from one config."""

    def __init__(self, config: Config, client: UpstreamClient,
                 previous: "Gateway | None" = None, directory: Directory | None = None) -> None:
        self.config = config
        self.client = client
        # Built by whoever read the directory files (at start, or in a reload's thread).
        self.directory = directory if directory is not None else Directory(
            client.reactor, config, read_files(config), None)
        self.router = Router(config, self.directory)
        self.balancer: Balancer = Balancer(client.reactor, client, config,
                                           previous.balancer if previous is not None else None)
        self.health = HealthChecker(self.balancer, config.health)
        # The buckets outlive a reload that keeps [rate_limit] as it was.
        same = previous is not None and previous.config.rate_limit == config.rate_limit
        self.limits: Limits = (previous.limits if previous is not None and same
                               else Limits(client.reactor, config.rate_limit))
        self._find_caches: dict[str, TTLCache[bytes, str]] = {}
        self._publish: LoopingCall | None = None
        self._openapi: bytes | None = None

    def start(self) -> None:
        self.health.start()
        self._publish = LoopingCall(self.balancer.publish)
        self._publish.clock = self.client.reactor
        self._publish.start(PUBLISH_INTERVAL)

    def stop(self) -> None:
        self.health.stop()
        if self._publish is not None and self._publish.running:
            self._publish.stop()

    def openapi(self) -> bytes:
        """This config's OpenAPI document (made once per config)."""
        if self._openapi is None:
            self._openapi = orjson.dumps(openapi.document(self.config))
        return self._openapi

    def find_cache(self, route: Route) -> "TTLCache[bytes, str]":
        """The owner cache of a find route (path -> shard), bounded in size and age."""
        cache = self._find_caches.get(route.key)
        if cache is None:
            assert route.find is not None
            cache = TTLCache(route.find.cache_size, route.find.cache_ttl)
            self._find_caches[route.key] = cache
        return cache
