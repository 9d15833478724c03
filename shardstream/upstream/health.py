"""Active health checks: ``GET [health] path`` on every replica, every interval.

A replica is marked down after ``unhealthy_threshold`` failed checks in a
row (not 2xx, no answer within ``timeout``) and up again after
``healthy_threshold`` good ones; the :class:`~shardstream.core.replicas.ReplicaSet`
keeps the state, requests only go to replicas that are up. Checks bypass
outlier detection and retries: they are the independent opinion.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.http_headers import Headers

from twisted.web.iweb import IResponse

from ..core.config import HealthConfig
from ..core.errors import ShardError
from ..core.replicas import Replica, ReplicaSet
from ..observe.metrics import metrics
from .balancer import Balancer

log = Logger(namespace="shardstream")


class _Check:
    """The ShardSink of one check request; reads the (small) body so the
    connection goes back to the pool."""

    def __init__(self, checker: "HealthChecker", rs: ReplicaSet, replica: Replica) -> None:
        self.checker, self.rs, self.replica = checker, rs, replica
        self.ok = False
        self.call: Any = None
        self.timer: Any = None

    def response(self, response: IResponse) -> bool:
        self.ok = 200 <= response.code < 300
        return True

    def data(self, data: bytes) -> bool:
        return True

    def end(self) -> None:
        self.checker._result(self, self.ok)

    def failed(self, error: ShardError) -> None:
        self.checker._result(self, False)

    def expire(self) -> None:
        self.timer = None
        self.call.cancel()
        self.checker._result(self, False)


class HealthChecker:
    def __init__(self, balancer: Balancer, health: HealthConfig) -> None:
        self.balancer = balancer
        self.health = health
        self.reactor = balancer.reactor
        self._loop: LoopingCall | None = None
        self._first: Any = None
        self._running: dict[int, _Check] = {}  # id(replica) -> its check in flight

    def start(self) -> None:
        if self.health.path is None:
            return
        self._loop = LoopingCall(self._round)
        self._loop.clock = self.reactor
        # A random start, so that workers (and gateways) do not check in step.
        self._first = self.reactor.callLater(random.uniform(0, min(self.health.interval, 1.0)),
                                             self._loop.start, self.health.interval)

    def stop(self) -> None:
        if self._first is not None and self._first.active():
            self._first.cancel()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        for check in list(self._running.values()):
            if check.timer is not None:
                check.timer.cancel()
            check.call.cancel()
        self._running.clear()

    def _round(self) -> None:
        assert self.health.path is not None  # start() runs no rounds without one
        path = self.health.path.encode()
        for rs in self.balancer.sets.values():
            for replica in rs.replicas:
                if id(replica) in self._running:
                    continue  # the last one has not ended yet (its timer will)
                check = _Check(self, rs, replica)
                self._running[id(replica)] = check
                check.timer = self.reactor.callLater(self.health.timeout, check.expire)
                headers = self.balancer.with_credential(rs.shard, Headers({b"accept": [b"*/*"]}))
                check.call = self.balancer.client.call(
                    b"GET", replica.url.encode() + path, headers, None, check)

    def _result(self, check: _Check, ok: bool) -> None:
        if self._running.get(id(check.replica)) is not check:
            return  # already counted (a timeout), or checks stopped
        del self._running[id(check.replica)]
        if check.timer is not None:
            check.timer.cancel()
            check.timer = None
        replica = check.replica
        metrics().checks.labels(replica.shard, str(replica.index), "ok" if ok else "failed").inc()
        if check.rs.checked(replica, ok, self.health):
            self.balancer.publish()
            if ok:
                log.info("shard {shard} replica {index} ({url}) passes its health checks again",
                         shard=replica.shard, index=replica.index, url=replica.url,
                         event="replica_up")
            else:
                log.warn("shard {shard} replica {index} ({url}) failed {n} health checks: "
                         "out of service", shard=replica.shard, index=replica.index,
                         url=replica.url, n=self.health.unhealthy_threshold,
                         event="replica_down")
