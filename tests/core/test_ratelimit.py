"""GCRA: bursts, the sustained rate, and what the headers say."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shardstream.core import ratelimit
from shardstream.core.ratelimit import Limit, take


def test_a_burst_then_one_per_interval():
    limit = Limit(rate=2.0, burst=3)
    tat, out = 0.0, []
    for now in (0, 0, 0, 0, 0.5, 0.5, 1.4):
        d, tat = take(tat, now, limit)
        out.append((d.allowed, d.remaining, round(d.retry_after, 3)))
    assert out == [(True, 2, 0), (True, 1, 0), (True, 0, 0), (False, 0, 0.5),
                   (True, 0, 0), (False, 0, 0.5), (True, 0, 0)]


def test_the_fields_as_the_draft_writes_them():
    d, _ = take(0.0, 100.0, Limit(rate=10, burst=40))
    assert dict(d.headers()) == {b"ratelimit-policy": b'"default";q=40;w=4',
                                 b"ratelimit": b'"default";r=39;t=1'}
    assert ratelimit.limit_of(None, 5) is None
    assert ratelimit.limit_of(2.5, None) == Limit(2.5, 3)


@given(st.floats(0.1, 50), st.integers(1, 20),
       st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=200))
def test_no_window_ever_lets_more_than_the_burst_plus_the_rate(rate, burst, times):
    limit = Limit(rate, burst)
    tat, allowed = 0.0, []
    for now in sorted(times):
        d, tat = take(tat, now, limit)
        if d.allowed:
            allowed.append(now)
        else:
            assert d.retry_after > 0 and d.remaining == 0
    for i, start in enumerate(allowed):
        for j in range(i, len(allowed)):
            span = allowed[j] - start
            assert j - i + 1 <= burst + span * rate + 1e-6


def test_a_redis_reply_becomes_the_same_decision_and_slot():
    d, slot = ratelimit.from_redis(Limit(1, 5), [0, 0, 3_000_000, 1_500_000, -1])
    assert (d.allowed, d.remaining, d.reset, d.retry_after, slot) == (False, 0, 3.0, 1.5, None)
    d, slot = ratelimit.from_redis(Limit(1, 5), [1, 4, 1_000_000, 0, 1])
    assert (d.allowed, d.remaining, slot) == (True, 4, ratelimit.HELD)
    assert ratelimit.from_redis(Limit(1, 5), [1, -1, 0, 0, 0]) == (None, ratelimit.FULL)
    assert ratelimit.from_redis(None, [1, -1, 0, 0, 1]) == (None, ratelimit.HELD)
