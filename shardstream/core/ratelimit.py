"""Rate limits as GCRA (the generic cell rate algorithm), and how they are told.

GCRA is a token bucket kept as one number per partner, the theoretical
arrival time (TAT) of the next request: a request at ``now`` is allowed
while ``TAT - now`` is at most the burst tolerance, and then moves TAT on by
one emission interval (``1 / rate``). One number is what makes the Redis
backend one atomic script over one key (``REDIS_SCRIPT`` below is the same
algorithm, with Redis's clock so that every host agrees). The answer is told
as the IETF draft "RateLimit header fields for HTTP" writes it:
``RateLimit-Policy: "default";q=BURST;w=WINDOW`` and
``RateLimit: "default";r=REMAINING;t=RESET``, and ``Retry-After`` on a 429.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

POLICY = "default"


@dataclass(frozen=True)
class Limit:
    rate: float  # requests per second, sustained
    burst: int  # requests at once

    @property
    def interval(self) -> float:
        return 1.0 / self.rate

    @property
    def window(self) -> int:
        """Seconds in which ``burst`` requests come back: the policy's w."""
        return max(1, math.ceil(self.burst / self.rate))


def limit_of(rate: float | None, burst: int | None) -> Limit | None:
    """A partner's limit; no rate: none. The burst defaults to one second's worth."""
    if rate is None:
        return None
    return Limit(rate, burst if burst is not None else max(1, math.ceil(rate)))


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: Limit
    remaining: int  # requests allowed right now, after this one
    reset: float  # seconds until the whole burst is available again
    retry_after: float  # a denied request: seconds until one is allowed

    def headers(self) -> list[tuple[bytes, bytes]]:
        lim = self.limit
        return [
            (b"ratelimit-policy", f'"{POLICY}";q={lim.burst};w={lim.window}'.encode()),
            (b"ratelimit", f'"{POLICY}";r={self.remaining};t={math.ceil(self.reset)}'.encode()),
        ]


def take(tat: float, now: float, limit: Limit) -> tuple[Decision, float]:
    """One request at ``now`` against a bucket at ``tat``: the decision and
    the bucket's new TAT."""
    interval = limit.interval
    tolerance = interval * (limit.burst - 1)
    tat = max(tat, now)
    if tat - now > tolerance + 1e-9:
        return Decision(False, limit, 0, tat - now, tat - now - tolerance), tat
    new = tat + interval
    return decided(limit, now, new), new


def decided(limit: Limit, now: float, tat: float) -> Decision:
    """An allowed request's decision, once its bucket is at ``tat``."""
    remaining = max(0, math.floor(limit.burst - (tat - now) / limit.interval + 1e-9))
    return Decision(True, limit, remaining, tat - now, 0.0)


# The same algorithm in Redis, in microseconds of Redis's own clock: KEYS[1] is
# the partner's bucket; ARGV the emission interval and the burst. Returns
# {allowed, remaining, reset_us, retry_us}. The key expires once the bucket is full.
REDIS_SCRIPT = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tolerance = interval * (burst - 1)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - now > tolerance then
  return {0, 0, tat - now, tat - now - tolerance}
end
local new = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', math.ceil((new - now) / 1000) + 1000)
return {1, math.floor(burst - (new - now) / interval), new - now, 0}
"""


def from_redis(limit: Limit, reply: list[int]) -> Decision:
    allowed, remaining, reset_us, retry_us = (int(v) for v in reply)
    return Decision(bool(allowed), limit, max(0, remaining), reset_us / 1e6, retry_us / 1e6)
