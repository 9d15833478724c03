"""Partners' rate and concurrency limits, carried out.

The core computes every decision (:mod:`shardstream.core.ratelimit`); here
the buckets are kept: in the process (``local``: each worker its own), or in
Redis (``redis``: one bucket per partner for every worker and host, one
atomic script and one round trip per request, through txredisapi). A check
never waits for Redis longer than ``rate_limit.timeout``: past it, or with
Redis unreachable, ``on_redis_down`` decides (``open``: the request passes,
unlimited; ``closed``: 503). The change of state is logged once each way and
shown as a metric; txredisapi reconnects by itself.

Concurrency limits count a partner's list streams in flight: in the
process with ``local``, in Redis with ``redis`` (one sorted set per partner,
checked in the same script as the rate); a stream's slot is released when
its request's record ends, however it ends.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Any, Callable

from twisted.internet import defer
from twisted.logger import Logger

from ..core import ratelimit
from ..core.config import RateLimitConfig
from ..core.errors import RateLimited, RateLimitUnavailable
from ..core.keys import Partner
from ..observe.metrics import metrics
from ..upstream import redis

log = Logger(namespace="shardstream")

DOWN = "down"  # a check's answer when Redis could not be asked
# A list stream's slot in Redis expires after this long, in case its gateway
# died holding it; a stream that lasts longer stops counting then.
STREAM_TTL = 3600.0


@dataclass(frozen=True)
class Check:
    """What a limit check found: the rate decision (None: no rate limit;
    DOWN: Redis did not answer), and a list stream's slot (HELD, with the
    callable that gives it back; FULL; or None: not counted)."""

    decision: ratelimit.Decision | str | None
    slot: str | None = None
    release: Callable[[], None] | None = None


class Limits:
    """Every partner's buckets and streams in flight, for one process."""

    def __init__(self, reactor: Any, config: RateLimitConfig) -> None:
        self.reactor = reactor
        self.config = config
        self.tats: dict[str, float] = {}  # local buckets
        self.streams: dict[str, int] = {}
        self.redis: Any = None
        self.reach = redis.Reachability(
            "rate limits", config.redis_url, lambda: metrics().redis_up,
            "requests are let through unlimited until it does" if config.on_redis_down == "open"
            else "requests are refused with 503 until it does")
        if config.backend == "redis":
            self.redis = redis.connect(config.redis_url, config.timeout)

    def take(self, partner: Partner, stream: bool) -> "defer.Deferred[Check]":
        """One request of ``partner`` (``stream``: a list stream, which its
        concurrency counts): the rate decision and the stream's slot."""
        limit = ratelimit.limit_of(partner.rate, partner.burst)
        most = partner.concurrency if stream else None
        if self.redis is None:
            return defer.succeed(self._take_local(partner, limit, most))
        stream_id = secrets.token_hex(8)
        d = self.redis.eval(
            ratelimit.REDIS_SCRIPT,
            keys=[f"shardstream:rl:{partner.name}", f"shardstream:streams:{partner.name}"],
            args=[int(limit.interval * 1e6) if limit else 0, limit.burst if limit else 0,
                  most or 0, stream_id, int(STREAM_TTL * 1e6)])
        d.addTimeout(self.config.timeout, self.reactor)
        d.addCallbacks(lambda reply: self._redis_answered(partner, limit, stream_id, reply),
                       self._redis_failed)
        return d

    def _take_local(self, partner: Partner, limit: ratelimit.Limit | None,
                    most: int | None) -> Check:
        name = partner.name
        if most is not None and self.streams.get(name, 0) >= most:
            return Check(None, ratelimit.FULL)  # no token taken for a request refused anyway
        decision = None
        if limit is not None:
            decision, self.tats[name] = ratelimit.take(self.tats.get(name, 0.0),
                                                       self.reactor.seconds(), limit)
            if not decision.allowed:
                return Check(decision, None)
        if most is None:
            return Check(decision, None)
        self.streams[name] = self.streams.get(name, 0) + 1
        return Check(decision, ratelimit.HELD, lambda: self._leave_local(name))

    def _leave_local(self, name: str) -> None:
        n = self.streams.get(name, 0) - 1
        if n > 0:
            self.streams[name] = n
        else:
            self.streams.pop(name, None)

    def _redis_answered(self, partner: Partner, limit: ratelimit.Limit | None, stream_id: str,
                        reply: Any) -> Check:
        self.reach.answered()
        decision, slot = ratelimit.from_redis(limit, reply)
        release = None
        if slot == ratelimit.HELD:
            key = f"shardstream:streams:{partner.name}"
            release = lambda: self._release_redis(key, stream_id)  # noqa: E731
        return Check(decision, slot, release)

    def _release_redis(self, key: str, stream_id: str) -> None:
        d = self.redis.zrem(key, stream_id)
        d.addErrback(lambda f: None)  # Redis gone: the member expires by itself (STREAM_TTL)

    def _redis_failed(self, failure: Any) -> Check:
        self.reach.failed(failure)
        return Check(DOWN, None)

    def close(self) -> Any:
        if self.redis is not None:
            return self.redis.disconnect()
        return None


def limited(partner: Partner) -> bool:
    """Must this partner's requests wait for a limit check? (Its uploads are
    then read whole before they go to the shard.)"""
    return partner.rate is not None or partner.concurrency is not None


def apply(request: Any, gateway: Any, partner: Partner, check: Check) -> None:
    """Carry out a check: the RateLimit fields on the answer, or the answer
    itself (raised as a ClientError); a list stream's slot, released when the
    request's record ends however it ends."""
    m = metrics()
    decision = check.decision
    if decision == DOWN:
        if gateway.limits.config.on_redis_down == "closed":
            m.limited.labels("redis_down").inc()
            raise RateLimitUnavailable("the rate limits cannot be checked now; try again",
                                       retry_after=1)
        m.unlimited.inc()
        return
    if decision is not None:
        assert isinstance(decision, ratelimit.Decision)
        request.ratelimit = decision.headers()
        for name, value in request.ratelimit:
            request.setHeader(name, value)
        if not decision.allowed:
            m.limited.labels("rate").inc()
            seconds = max(1, math.ceil(decision.retry_after))
            raise RateLimited(f"partner {partner.name} is over its rate limit "
                              f"({decision.limit.rate:g}/s, burst {decision.limit.burst})",
                              retry_after=seconds)
    if check.slot == ratelimit.FULL:
        m.limited.labels("concurrency").inc()
        raise RateLimited(f"partner {partner.name} has {partner.concurrency} list streams "
                          "in flight, its limit", retry_after=1, code="concurrency_limited")
    if check.release is not None:
        request.record.on_end.append(check.release)
