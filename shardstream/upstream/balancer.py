"""Requests to a shard, across its replicas: pick one, retry on another, eject.

A :class:`BalancedCall` looks to its caller like one
:class:`~shardstream.upstream.client.ShardCall` (the same
:class:`~shardstream.upstream.sink.ShardSink` events, the same ``pause``,
``resume``, ``cancel``), but it may make several attempts: it is itself the
sink of each attempt. An attempt that fails before its response was handed
to the caller is retried on another replica when the core's retry policy
(:mod:`shardstream.core.retry`) says the request may be sent again, the
request's retries and the shard's retry budget allow it, and the request's
total deadline has time left. Once the caller has the response headers,
the shard is committed: what happens next is the caller's to report.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from twisted.logger import Logger
from twisted.web.http_headers import Headers

from twisted.web.iweb import IResponse

from ..core import retry, tracing
from ..core.config import Config
from ..core.errors import ShardError
from ..core.replicas import Replica, ReplicaSet
from ..core.retry import RetryBudget
from ..observe.metrics import metrics
from .client import ShardCall, UpstreamClient
from .sink import ShardSink

log = Logger(namespace="shardstream")


class Balancer:
    """The replicas of every shard, their health, and the retry budget."""

    def __init__(self, reactor: Any, client: UpstreamClient, config: Config,
                 previous: "Balancer | None" = None) -> None:
        self.reactor = reactor
        self.client = client
        self.config = config
        self.sets = {s.name: ReplicaSet(s.name, s.urls, config.outlier) for s in config.shards}
        self.credentials = {s.name: s.credential for s in config.shards if s.credential}
        up = config.upstream
        # One budget per shard (Envoy's is per cluster): a shard that is down
        # everywhere cannot spend the retries another shard's failover needs.
        self.budgets = {s.name: RetryBudget(up.retry_budget, up.retry_budget_min)
                        for s in config.shards}
        if previous is not None:
            self._carry_over(previous)

    def _carry_over(self, previous: "Balancer") -> None:
        """A reload keeps what is known about replicas that stay."""
        for name, rs in self.sets.items():
            old = previous.sets.get(name)
            if old is None:
                continue
            known = {r.url: r for r in old.replicas}
            for r in rs.replicas:
                o = known.get(r.url)
                if o is not None:
                    r.failures, r.ejections, r.ejected_until = o.failures, o.ejections, o.ejected_until
                    if self.config.health.path is not None:  # else nothing would bring it back
                        r.checked_up, r.streak = o.checked_up, o.streak
        if previous.config.upstream == self.config.upstream:
            for name in self.budgets:
                if name in previous.budgets:
                    self.budgets[name] = previous.budgets[name]

    def call(self, shard: str, method: bytes, target: bytes, headers: Headers, body: Any,
             sink: ShardSink, body_sent: Any = None) -> "BalancedCall":
        """Send ``method target`` (path and query) to a replica of ``shard``,
        with the shard's own credential when it has one."""
        headers = self.with_credential(shard, headers)
        call = BalancedCall(self, self.sets[shard], self.budgets[shard], method, target,
                            headers, body, sink, body_sent)
        call.start()
        return call

    def with_credential(self, shard: str, headers: Headers) -> Headers:
        credential = self.credentials.get(shard)
        if credential is None:
            return headers
        out = headers.copy()
        out.setRawHeaders(credential[0].encode(), [credential[1]])
        return out

    def publish(self) -> None:
        """Every replica's availability, into its gauge (ejections expire with
        time, so this runs on a timer as well as on changes)."""
        now = self.reactor.seconds()
        gauge = metrics().available
        for name, rs in self.sets.items():
            for r in rs.replicas:
                gauge.labels(name, str(r.index)).set(1 if r.available(now) else 0)

    def unavailable(self) -> list[str]:
        """The shards none of whose replicas may be sent a request now."""
        now = self.reactor.seconds()
        return [name for name, rs in self.sets.items()
                if not any(r.available(now) for r in rs.replicas)]

    def status(self) -> dict[str, Any]:
        """Every replica's state, for /healthz."""
        now = self.reactor.seconds()
        return {name: [{"replica": r.index, "state": r.state(now), "in_flight": r.in_flight,
                        "failures": r.failures,
                        "ejected_for": round(max(r.ejected_until - now, 0.0), 1)}
                       for r in rs.replicas]
                for name, rs in self.sets.items()}


class BalancedCall:
    """One shard request across the shard's replicas (a ShardSink of its attempts)."""

    def __init__(self, balancer: Balancer, replicas: ReplicaSet, budget: RetryBudget,
                 method: bytes, target: bytes, headers: Headers, body: Any, sink: ShardSink,
                 body_sent: Any) -> None:
        self.balancer = balancer
        self.replicas = replicas
        self.budget = budget
        self.method, self.target, self.headers, self.body = method, target, headers, body
        self.sink = sink
        self.body_sent = body_sent
        self.done = False
        self.paused = False
        self.attempts = 0
        self.replica: Replica | None = None  # of the current attempt
        self.current: ShardCall | None = None
        self._tried: list[Replica] = []
        self._deadline = 0.0
        self._pending: Any = None  # a failure reported on the next reactor turn
        self._status = 0  # of the response handed on to the sink; 0: none yet
        self._attempt_started = 0.0
        self._counted = True  # the current attempt's outcome is in the metrics
        self._metrics = metrics()

    # -- the caller's side: the same as a ShardCall ------------------------------

    def start(self) -> None:
        now = self.balancer.reactor.seconds()
        self._deadline = now + self.balancer.config.upstream.total_timeout
        self.budget.request(now)
        if not self._attempt(now):
            # A sink never hears from its call before call() has returned.
            error = ShardError("no_healthy_replica", self.replicas.unavailable_reason(now))
            self._metrics.child(self._metrics.attempts, self.replicas.shard, error.code).inc()
            self._pending = self.balancer.reactor.callLater(0, self._report, error)

    def pause(self) -> None:
        self.paused = True
        if self.current is not None:
            self.current.pause()

    def resume(self) -> None:
        self.paused = False
        if self.current is not None:
            self.current.resume()

    def cancel(self, outcome: str = "cancelled") -> None:
        """``outcome``: why, for the attempts metric: not needed any more, or
        the failure the caller found in the body (``malformed_json`` ...)."""
        if self.done:
            return
        self._count(outcome)
        self.done = True
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._release()
        if self.current is not None:
            self.current.cancel()

    # -- the attempt's sink ----------------------------------------------------------

    def response(self, response: IResponse) -> bool:
        if self.done:
            return False
        now = self.balancer.reactor.seconds()
        m = self._metrics
        m.child(m.headers, self.replicas.shard).observe(now - self._attempt_started)
        code = response.code
        if code >= 500:
            self._replica_failed(now)
        if retry.retryable_status(self.method, self.body is not None, code) and self._retry(now):
            return False  # this attempt's body is dropped; the next one is under way
        self._status = code
        replica = self.replica
        keep = self.sink.response(response)
        if not keep:
            self._count(_answered(code))
            if code < 500:  # a good answer whose body is not wanted (say a 404)
                assert replica is not None  # the attempt's, taken before the sink ran
                self.replicas.succeeded(replica)
            if not self.done:
                self.done = True
                self._release()
        return keep

    def data(self, data: bytes) -> bool:
        return not self.done and self.sink.data(data)

    def end(self) -> None:
        if self.done:
            return
        self.done = True
        self._count(_answered(self._status))
        if self._status < 500:
            # A replica is sound when a response ends well, not when its headers
            # come: one that stalls or cuts its bodies must be ejected too.
            assert self.replica is not None  # not released yet
            self.replicas.succeeded(self.replica)
        self._release()
        self.sink.end()

    def failed(self, error: ShardError) -> None:
        if self.done:
            return
        now = self.balancer.reactor.seconds()
        if retry.replica_fault(error.code):
            self._replica_failed(now)
        if (not self._status and retry.retryable_failure(self.method, self.body is not None,
                                                         error.code) and self._retry(now)):
            return
        self._report(error)

    # -- internals -------------------------------------------------------------------

    def _attempt(self, now: float) -> bool:
        replica = self.replicas.pick(now, self._tried)
        if replica is None:
            return False
        self._start(replica, now)
        return True

    def _count(self, outcome: str) -> None:
        """The current attempt's outcome, once."""
        if not self._counted:
            self._counted = True
            self._metrics.child(self._metrics.attempts, self.replicas.shard, outcome).inc()

    def _start(self, replica: Replica, now: float) -> None:
        self._count("retried")  # the attempt before this one, if any
        self._counted = False
        self._attempt_started = now
        self._release()
        self.replica = replica
        replica.in_flight += 1
        self._tried.append(replica)
        self.attempts += 1
        attempt = self.attempts
        url = replica.url.encode() + self.target
        headers = self.headers
        if attempt > 1:  # a retry is a span of its own: the same trace, a new parent id
            parent = headers.getRawHeaders(b"traceparent")
            if parent:
                headers = headers.copy()
                headers.setRawHeaders(b"traceparent", [tracing.sibling(parent[-1])])
        call = self.balancer.client.call(
            self.method, url, headers, self.body, self, body_sent=self.body_sent,
            total_timeout=self._deadline - now,
        )
        if self.attempts != attempt or self.done:
            return  # it ended (or a newer attempt began) inside client.call
        self.current = call
        if self.paused:
            call.pause()

    def _retry(self, now: float) -> bool:
        """Start another attempt if this request may have one; False if not."""
        if self.attempts > self.balancer.config.upstream.retries or now >= self._deadline:
            return False
        replica = self.replicas.pick(now, self._tried)
        if replica is None:
            return False
        if not self.budget.try_retry(now):
            self._metrics.child(self._metrics.budget, self.replicas.shard).inc()
            return False
        self._start(replica, now)
        return True

    def _replica_failed(self, now: float) -> None:
        replica = self.replica
        assert replica is not None  # called for the attempt under way
        ejected = self.replicas.failed(replica, now)
        if ejected is not None:
            self._metrics.child(self._metrics.ejections, replica.shard, str(replica.index)).inc()
            self.balancer.publish()
            log.warn("shard {shard} replica {index} ({url}) ejected for {seconds:g} s after "
                     "{n} failures in a row", shard=replica.shard, index=replica.index,
                     url=replica.url, seconds=ejected, n=replica.failures,
                     event="replica_ejected")

    def _release(self) -> None:
        if self.replica is not None:
            self.replica.in_flight -= 1
            self.replica = None

    def _report(self, error: ShardError) -> None:
        self._pending = None
        if self.done:
            return
        self.done = True
        self._count(error.code)
        self._release()
        if self.attempts > 1:
            error = dataclasses.replace(error, attempts=self.attempts)
        self.sink.failed(error)


def _answered(status: int) -> str:
    """An attempt that got a response: the replica answered (``ok``, a 4xx
    included), or failed with a 5xx (``status``, as in meta.shards.failed)."""
    return "ok" if status < 500 else "status"
