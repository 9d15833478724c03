"""Partners' rate and concurrency limits, carried out.

The core computes every decision (:mod:`shardstream.core.ratelimit`); here
the buckets are kept: in the process (``local``: each worker its own), or in
Redis (``redis``: one bucket per partner for every worker and host, one
atomic script and one round trip per request, through txredisapi). A check
never waits for Redis longer than ``rate_limit.timeout``: past it, or with
Redis unreachable, ``on_redis_down`` decides (``open``: the request passes,
unlimited; ``closed``: 503). The change of state is logged once each way and
shown as a metric; txredisapi reconnects by itself.

Concurrency limits count a partner's list streams in flight in this process;
the count is released when the request's record ends, however it ends.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import defer
from twisted.logger import Logger

from ..core import ratelimit
from ..core.config import RateLimitConfig
from ..core.errors import RateLimited, RateLimitUnavailable
from ..core.keys import Partner
from ..observe.metrics import metrics

log = Logger(namespace="shardstream")

DOWN = "down"  # a check's answer when Redis could not be asked


class Limits:
    """Every partner's buckets and streams in flight, for one process."""

    def __init__(self, reactor: Any, config: RateLimitConfig) -> None:
        self.reactor = reactor
        self.config = config
        self.tats: dict[str, float] = {}  # local buckets
        self.streams: dict[str, int] = {}
        self.redis: Any = None
        self.redis_up: bool | None = None  # unknown until the first check
        if config.backend == "redis":
            import txredisapi  # type: ignore[import-untyped]

            url = urlsplit(config.redis_url)
            self.redis = txredisapi.lazyConnectionPool(
                url.hostname, url.port or 6379, dbid=int(url.path.strip("/") or 0), poolsize=4,
                reconnect=True, connectTimeout=max(config.timeout, 0.5),
                replyTimeout=max(config.timeout * 4, 0.5))

    def take(self, partner: Partner) -> "defer.Deferred[ratelimit.Decision | str | None]":
        """One request of ``partner``: a decision, DOWN, or None (no rate limit)."""
        limit = ratelimit.limit_of(partner.rate, partner.burst)
        if limit is None:
            return defer.succeed(None)
        if self.redis is None:
            decision, self.tats[partner.name] = ratelimit.take(
                self.tats.get(partner.name, 0.0), self.reactor.seconds(), limit)
            return defer.succeed(decision)
        d = self.redis.eval(ratelimit.REDIS_SCRIPT, keys=[f"shardstream:rl:{partner.name}"],
                            args=[int(limit.interval * 1e6), limit.burst])
        d.addTimeout(self.config.timeout, self.reactor)
        d.addCallbacks(lambda reply: self._redis_answered(limit, reply), self._redis_failed)
        return d

    def _redis_answered(self, limit: ratelimit.Limit, reply: Any) -> ratelimit.Decision:
        if self.redis_up is not True:
            if self.redis_up is False:
                log.info("rate limits: Redis at {url} answers again", url=self.config.redis_url,
                         event="redis_up")
            self.redis_up = True
            metrics().redis_up.set(1)
        return ratelimit.from_redis(limit, reply)

    def _redis_failed(self, failure: Any) -> str:
        if self.redis_up is not False:
            log.warn("rate limits: Redis at {url} does not answer ({error}); requests are "
                     "{policy} until it does", url=self.config.redis_url,
                     error=failure.getErrorMessage() or failure.type.__name__,
                     policy="let through unlimited" if self.config.on_redis_down == "open"
                     else "refused with 503", event="redis_down")
            self.redis_up = False
            metrics().redis_up.set(0)
        return DOWN

    def enter(self, partner: Partner) -> bool:
        """A list stream of ``partner`` starts, if its concurrency allows."""
        n = self.streams.get(partner.name, 0)
        if partner.concurrency is not None and n >= partner.concurrency:
            return False
        self.streams[partner.name] = n + 1
        return True

    def leave(self, partner: Partner) -> None:
        n = self.streams.get(partner.name, 0) - 1
        if n > 0:
            self.streams[partner.name] = n
        else:
            self.streams.pop(partner.name, None)

    def close(self) -> Any:
        if self.redis is not None:
            return self.redis.disconnect()
        return None


def limited(partner: Partner) -> bool:
    """Must this partner's requests wait for a limit check? (Its uploads are
    then read whole before they go to the shard.)"""
    return partner.rate is not None or partner.concurrency is not None


def apply(request: Any, gateway: Any, match: Any, partner: Partner, decision: Any) -> None:
    """Carry out a check's decision: the RateLimit fields on the answer, or
    the answer itself (raised as a ClientError); a list stream's slot."""
    m = metrics()
    if decision == DOWN:
        if gateway.limits.config.on_redis_down == "closed":
            m.limited.labels("redis_down").inc()
            raise RateLimitUnavailable("the rate limits cannot be checked now; try again",
                                       retry_after=1)
        m.unlimited.inc()
    elif decision is not None:
        request.ratelimit = decision.headers()
        for name, value in request.ratelimit:
            request.setHeader(name, value)
        if not decision.allowed:
            m.limited.labels("rate").inc()
            seconds = max(1, math.ceil(decision.retry_after))
            raise RateLimited(f"partner {partner.name} is over its rate limit "
                              f"({decision.limit.rate:g}/s, burst {decision.limit.burst})",
                              retry_after=seconds)
    if match.route.mode == "scatter" and partner.concurrency is not None:
        limits = gateway.limits
        if not limits.enter(partner):
            m.limited.labels("concurrency").inc()
            raise RateLimited(f"partner {partner.name} has {partner.concurrency} list streams "
                              "in flight, its limit", retry_after=1, code="concurrency_limited")
        request.record.on_end.append(lambda: limits.leave(partner))
