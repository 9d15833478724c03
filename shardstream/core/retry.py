"""When a shard request may be tried again, and how often.

Sans-IO. The method sets are the one definition of which requests are safe
to send twice: the balancer's retries and the connection pool's automatic
resend both ask here. A write is retried only when its attempt never
connected, so it cannot have reached the shard.

The :class:`RetryBudget` keeps retries a bounded share of the traffic, as
Envoy's and Finagle's retry budgets do, so a shard that is down everywhere
does not triple the load on the rest of the system.
"""

from __future__ import annotations

READS = frozenset({b"GET", b"HEAD", b"OPTIONS"})  # safe to send twice
BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})
WRITES = BODY_METHODS | {b"DELETE"}

# Failures of an attempt, by ShardError code:
UNSENT = frozenset({"connect_refused", "connect_timeout", "connect_error"})  # never left
BEFORE_HEADERS = UNSENT | {"tls_error", "no_response", "first_byte_timeout", "request_failed"}
RETRY_STATUSES = frozenset({502, 503, 504})
# What says a replica is unwell (outlier detection). Not a 4xx or bad JSON
# (the application's answer), and nothing a client can cause: an upload it
# broke off (request_failed) or a total_timeout spent reading slowly.
REPLICA_FAULTS = UNSENT | {"tls_error", "no_response", "first_byte_timeout", "idle_timeout",
                           "truncated"}


def may_resend(method: bytes, has_body: bool = False) -> bool:
    """May this request reach a shard twice? (reads without a body only)"""
    return method in READS and not has_body


def retryable_failure(method: bytes, has_body: bool, code: str) -> bool:
    """May an attempt that failed with ``code`` before its response was handed
    on be made again on another replica?"""
    if may_resend(method, has_body):
        return code in BEFORE_HEADERS
    return code in UNSENT  # the request never left: its body was not read either


def retryable_status(method: bytes, has_body: bool, status: int) -> bool:
    return status in RETRY_STATUSES and may_resend(method, has_body)


def replica_fault(code: str) -> bool:
    return code in REPLICA_FAULTS


class RetryBudget:
    """Retries allowed over a sliding window: ``min_retries`` always, plus
    ``ratio`` times the requests started in the window."""

    def __init__(self, ratio: float, min_retries: int, window: int = 10) -> None:
        self.ratio = ratio
        self.min_retries = min_retries
        self.window = window
        self._requests = [0] * window  # per-second buckets
        self._retries = [0] * window
        self._second = 0

    def _advance(self, now: float) -> int:
        second = int(now)
        if second != self._second:
            steps = min(second - self._second, self.window)
            for k in range(1, steps + 1):
                i = (self._second + k) % self.window
                self._requests[i] = self._retries[i] = 0
            self._second = second
        return second % self.window

    def request(self, now: float) -> None:
        self._requests[self._advance(now)] += 1

    def try_retry(self, now: float) -> bool:
        """Take a retry from the budget if there is one."""
        i = self._advance(now)
        allowed = self.min_retries + self.ratio * sum(self._requests)
        if sum(self._retries) + 1 > allowed:
            return False
        self._retries[i] += 1
        return True
