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


def peek(tat: float, now: float, limit: Limit) -> Decision:
    """The bucket as it stands, nothing taken: what the RateLimit fields of a
    request refused for another reason (its streams are full) say."""
    return decided(limit, now, max(tat, now))


def decided(limit: Limit, now: float, tat: float) -> Decision:
    """An allowed request's decision, once its bucket is at ``tat``."""
    remaining = max(0, math.floor(limit.burst - (tat - now) / limit.interval + 1e-9))
    return Decision(True, limit, remaining, tat - now, 0.0)


# The same algorithm in Redis, in microseconds of Redis's own clock, with the
# partner's list streams in flight beside it (a sorted set: one member per
# stream, scored by when its lease runs out; expired members are pruned before
# counting, so the slot of a stream nobody renews, a crashed gateway's or one
# whose check was given up on, ages out), all in one script and one round
# trip. KEYS: the bucket, the streams. ARGV: the emission interval (0: no rate
# limit), the burst, the most streams (0: no cap), this stream's id, its
# lease. Returns {allowed, remaining, reset_us, retry_us, stream}: stream 1 a
# slot is held, 0 the streams are full (no token was taken: the bucket as it
# stands, for the RateLimit fields of the 429), -1 not counted.
REDIS_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local most = tonumber(ARGV[3])
local ttl = tonumber(ARGV[5])
if most > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= most then
    if interval == 0 then return {1, -1, 0, 0, 0} end
    local tat = tonumber(redis.call('GET', KEYS[1]) or now)  -- the bucket, nothing taken
    if tat < now then tat = now end
    return {1, math.floor(burst - (tat - now) / interval), tat - now, 0, 0}
  end
end
local remaining, reset = -1, 0
if interval > 0 then
  local tolerance = interval * (burst - 1)
  local tat = tonumber(redis.call('GET', KEYS[1]) or now)
  if tat < now then tat = now end
  if tat - now > tolerance then
    return {0, 0, tat - now, tat - now - tolerance, -1}
  end
  local new = tat + interval
  redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX',
             math.ceil((new - now) / 1000) + 1000)
  remaining, reset = math.floor(burst - (new - now) / interval), new - now
end
if most > 0 then
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[4])
  redis.call('PEXPIRE', KEYS[2], math.ceil(ttl / 1000) + 1000)
  return {1, remaining, reset, 0, 1}
end
return {1, remaining, reset, 0, -1}
"""

# A gateway's streams in flight renew their leases, all of one partner's at
# once (and only those still there: a slot released or expired stays gone).
# KEYS: the streams. ARGV: the lease, then the streams' ids.
REDIS_RENEW = """
local t = redis.call('TIME')
local expires = tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', expires, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1]) / 1000) + 1000)
return 0
"""

HELD, FULL = "held", "full"  # a list stream's slot: taken, or none left


def from_redis(limit: Limit | None, reply: list[int]) -> tuple[Decision | None, str | None]:
    """The script's reply: the rate decision (None: no rate limit) and the
    stream slot (HELD, FULL, or None: not counted)."""
    allowed, remaining, reset_us, retry_us, stream = (int(v) for v in reply)
    slot = HELD if stream == 1 else FULL if stream == 0 else None
    if limit is None or remaining == -1 and allowed:
        return None, slot
    return Decision(bool(allowed), limit, max(0, remaining), reset_us / 1e6, retry_us / 1e6), slot
