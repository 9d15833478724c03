"""Which shard requests may be sent again, and the retry budget."""

from __future__ import annotations

from shardstream.core.retry import RetryBudget


def test_retry_budget_is_a_share_of_recent_requests():
    b = RetryBudget(ratio=0.1, min_retries=2, window=10)
    assert b.try_retry(0) and b.try_retry(0)
    assert not b.try_retry(0)  # the minimum is used up, no traffic to share
    for _ in range(30):
        b.request(1)
    assert [b.try_retry(1) for _ in range(4)] == [True, True, True, False]  # 2 + 0.1 * 30 = 5
    assert not b.try_retry(9.9)
    assert b.try_retry(10.5)  # second 0's retries left the window
    assert b.try_retry(10.5) and not b.try_retry(10.5)
    assert [b.try_retry(30) for _ in range(3)] == [True, True, False]  # everything expired
