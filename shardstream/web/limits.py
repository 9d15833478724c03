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
its request's record ends, however it ends. In Redis a slot is a lease
(``SLOT_LEASE``) that its gateway renews while the stream runs, so a slot
nobody gives back (its gateway crashed) stops counting soon. A check given up
on (past the timeout) is not cancelled: its script may still run once Redis
answers, and a slot it took then is given back at once. A slot that could not
be given back because Redis did not answer is retried (a bounded list) until
Redis does.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Any, Callable

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..core import ratelimit
from ..core.config import RateLimitConfig
from ..core.errors import RateLimited, RateLimitUnavailable
from ..core.keys import Partner
from ..observe.metrics import metrics
from ..upstream import redis

log = Logger(namespace="shardstream")

DOWN = "down"  # a check's answer when Redis could not be asked
# A list stream's slot in Redis is a lease of this long, renewed every
# RENEW_EVERY while the stream runs: the slot of a stream nobody renews (its
# gateway died, or Redis was away longer than this) stops counting after it.
SLOT_LEASE = 30.0
RENEW_EVERY = SLOT_LEASE / 3
# Slots to give back while Redis does not answer, at most (the oldest beyond
# it are left to their lease), retried after RETRY_FIRST, doubling to RETRY_MOST.
PENDING_MOST = 1000
RETRY_FIRST, RETRY_MOST = 0.5, 10.0


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
        self.held: dict[str, set[str]] = {}  # Redis: streams key -> this process's slots
        self.pending: dict[str, str] = {}  # Redis: slots to give back, id -> streams key
        self._renewing: task.LoopingCall | None = None
        self._retry: Any = None  # the delayed call of the next try at giving back
        self._retry_delay = RETRY_FIRST
        self._closed = False
        if config.backend == "redis":
            self.redis = redis.connect(config.redis_url, config.timeout)

    def take(self, partner: Partner, stream: bool) -> "defer.Deferred[Check]":
        """One request of ``partner`` (``stream``: a list stream, which its
        concurrency counts): the rate decision and the stream's slot. With
        Redis, at most one round trip, and never later than the timeout."""
        limit = ratelimit.limit_of(partner.rate, partner.burst)
        most = partner.concurrency if stream else None
        if self.redis is None:
            return defer.succeed(self._take_local(partner, limit, most))
        stream_id = secrets.token_hex(8)
        key = f"shardstream:streams:{partner.name}"
        answer: defer.Deferred[Check] = defer.Deferred()
        # Raced against a timer, not cancelled: a script sent runs even when its
        # answer comes too late, and the slot it took must then be given back.
        timer = self.reactor.callLater(self.config.timeout, self._gave_up, answer)
        d = defer.maybeDeferred(
            self.redis.eval, ratelimit.REDIS_SCRIPT,
            keys=[f"shardstream:rl:{partner.name}", key],
            args=[int(limit.interval * 1e6) if limit else 0, limit.burst if limit else 0,
                  most or 0, stream_id, int(SLOT_LEASE * 1e6)])
        d.addCallbacks(self._redis_replied, self._redis_errored,
                       callbackArgs=(answer, timer, limit, key, stream_id),
                       errbackArgs=(answer, timer, key, stream_id, most is not None))
        d.addErrback(lambda f: log.failure("rate limits: a Redis answer was not handled", f))
        return answer

    def _gave_up(self, answer: "defer.Deferred[Check]") -> None:
        if not answer.called:
            answer.callback(self._redis_failed(Failure(defer.TimeoutError(
                f"no answer in {self.config.timeout:g} s"))))

    def _take_local(self, partner: Partner, limit: ratelimit.Limit | None,
                    most: int | None) -> Check:
        name = partner.name
        if most is not None and self.streams.get(name, 0) >= most:
            # No token taken for a request refused anyway; its fields tell the bucket.
            return Check(ratelimit.peek(self.tats.get(name, 0.0), self.reactor.seconds(), limit)
                         if limit is not None else None, ratelimit.FULL)
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

    def _redis_replied(self, reply: Any, answer: "defer.Deferred[Check]", timer: Any,
                       limit: ratelimit.Limit | None, key: str, stream_id: str) -> None:
        if answer.called:  # too late: the request went on without it
            try:
                slot = ratelimit.from_redis(limit, reply)[1]
            except Exception:
                slot = ratelimit.HELD  # who knows: giving back a slot not held is harmless
            if slot == ratelimit.HELD:
                self._release_redis(key, stream_id)
            return
        timer.cancel()
        try:
            check = self._redis_answered(limit, key, stream_id, reply)
        except Exception:  # not the script's answer: as if Redis had not answered
            failure = Failure()
            log.failure("rate limits: Redis answered {reply!r}", failure, reply=reply)
            self._give_back(key, stream_id)
            check = self._redis_failed(failure)
        answer.callback(check)

    def _redis_errored(self, failure: Failure, answer: "defer.Deferred[Check]", timer: Any,
                       key: str, stream_id: str, counted: bool) -> None:
        if counted:  # its script may have run all the same (and taken a slot)
            self._give_back(key, stream_id)
        if not answer.called:
            timer.cancel()
            answer.callback(self._redis_failed(failure))

    def _redis_answered(self, limit: ratelimit.Limit | None, key: str, stream_id: str,
                        reply: Any) -> Check:
        decision, slot = ratelimit.from_redis(limit, reply)
        self.reach.answered()
        if self._retry is not None:  # Redis is back: give back what it could not take then
            self._retry_delay = RETRY_FIRST
            self._flush()
        if slot != ratelimit.HELD:
            return Check(decision, slot)
        self.held.setdefault(key, set()).add(stream_id)
        self._renew_soon()
        return Check(decision, slot, lambda: self._release_held(key, stream_id))

    def _release_held(self, key: str, stream_id: str) -> None:
        ids = self.held.get(key)
        if ids is None or stream_id not in ids:
            return  # released already
        ids.discard(stream_id)
        if not ids:
            del self.held[key]
        self._release_redis(key, stream_id)

    def _release_redis(self, key: str, stream_id: str) -> None:
        d = defer.maybeDeferred(self.redis.zrem, key, stream_id)
        d.addErrback(lambda f: self._give_back(key, stream_id))

    def _give_back(self, key: str, stream_id: str) -> None:
        """Remember to remove the slot ``stream_id`` (it may be held or not)
        once Redis answers."""
        if self._closed:
            return
        self.pending[stream_id] = key
        while len(self.pending) > PENDING_MOST:  # the oldest: left to its lease
            del self.pending[next(iter(self.pending))]
        if self._retry is None:
            self._retry = self.reactor.callLater(self._retry_delay, self._flush)

    def _flush(self) -> None:
        """One ZREM per partner of every slot to give back; those that fail
        are tried again later (sooner if a check finds Redis back)."""
        if self._retry is not None:
            if self._retry.active():
                self._retry.cancel()
            self._retry = None
        if self._closed or not self.pending:
            return
        by_key: dict[str, list[str]] = {}
        for stream_id, key in self.pending.items():
            by_key.setdefault(key, []).append(stream_id)
        self.pending = {}
        for key, ids in by_key.items():
            d = defer.maybeDeferred(self.redis.zrem, key, *ids)
            d.addCallbacks(self._flushed, self._not_flushed, errbackArgs=(key, ids))

    def _flushed(self, _: Any) -> None:
        self._retry_delay = RETRY_FIRST

    def _not_flushed(self, failure: Failure, key: str, ids: list[str]) -> None:
        if self._retry is None:
            self._retry_delay = min(self._retry_delay * 2, RETRY_MOST)
        for stream_id in ids:
            self._give_back(key, stream_id)

    def _renew_soon(self) -> None:
        if self._renewing is None and not self._closed:
            self._renewing = task.LoopingCall(self._renew)
            self._renewing.clock = self.reactor
            self._renewing.start(RENEW_EVERY, now=False).addErrback(
                lambda f: log.failure("rate limits: renewing stream slots failed", f))

    def _renew(self) -> None:
        """Renew the leases of this process's slots (a failure: the next round)."""
        if not self.held:
            assert self._renewing is not None
            self._renewing.stop()
            self._renewing = None
            return
        for key, ids in self.held.items():
            d = defer.maybeDeferred(self.redis.eval, ratelimit.REDIS_RENEW, keys=[key],
                                    args=[int(SLOT_LEASE * 1e6), *sorted(ids)])
            d.addErrback(lambda f: None)

    def _redis_failed(self, failure: Any) -> Check:
        self.reach.failed(failure)
        return Check(DOWN, None)

    def close(self) -> Any:
        self._closed = True
        if self._renewing is not None:
            self._renewing.stop()
            self._renewing = None
        if self._retry is not None:
            if self._retry.active():
                self._retry.cancel()
            self._retry = None
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
