"""Which replica of a shard gets the next request, and whether to retry.

Sans-IO: the shell reports outcomes and passes the time in; nothing here
starts a timer or opens a connection.

A replica is *available* when its active health checks (if configured) say
it is up and it is not ejected. Passive outlier detection ejects a replica
after ``consecutive_failures`` failed requests in a row, for a back-off that
doubles with every ejection while it keeps failing (``base_ejection`` up to
``max_ejection``); when the back-off ends the replica is on probation: one
more failure ejects it again, one success clears its record. This is
Envoy's consecutive-5xx outlier detection, without a minimum host count: a
shard whose every replica is out is skipped at once rather than waited for.

Which failures are retried, and how many, is :mod:`shardstream.core.retry`.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from .config import HealthConfig, OutlierConfig


class Replica:
    __slots__ = ("shard", "url", "index", "in_flight", "failures", "ejections", "ejected_until",
                 "checked_up", "streak")

    def __init__(self, shard: str, url: str, index: int) -> None:
        self.shard, self.url, self.index = shard, url, index
        self.in_flight = 0
        self.failures = 0  # consecutive failed requests
        self.ejections = 0  # ejections since the last success
        self.ejected_until = 0.0
        self.checked_up = True  # active health checks; up until they say otherwise
        self.streak = 0  # consecutive check results against the current state

    def available(self, now: float) -> bool:
        return self.checked_up and now >= self.ejected_until

    def state(self, now: float) -> str:
        if not self.checked_up:
            return "unhealthy"
        if now < self.ejected_until:
            return "ejected"
        return "healthy"


class ReplicaSet:
    """The replicas of one shard, with their health."""

    def __init__(self, shard: str, urls: Sequence[str], outlier: OutlierConfig) -> None:
        self.shard = shard
        self.replicas = [Replica(shard, url, i) for i, url in enumerate(urls)]
        self.outlier = outlier
        self._next = 0  # round-robin start among replicas equally loaded

    def pick(self, now: float, exclude: Iterable[Replica] = ()) -> Replica | None:
        """The available replica with the fewest requests in flight (ties in
        turn), or None when none is available."""
        skip = {id(r) for r in exclude} if exclude else ()
        best: Replica | None = None
        n = len(self.replicas)
        start = self._next
        for k in range(n):
            r = self.replicas[(start + k) % n]
            if id(r) in skip or not r.available(now):
                continue
            if best is None or r.in_flight < best.in_flight:
                best = r
        if best is not None:
            self._next = (best.index + 1) % n
        return best

    def succeeded(self, replica: Replica) -> None:
        replica.failures = 0
        replica.ejections = 0

    def failed(self, replica: Replica, now: float) -> float | None:
        """Count a failed request; return the ejection time if this ejects it."""
        replica.failures += 1
        if replica.failures < self.outlier.consecutive_failures or now < replica.ejected_until:
            return None
        cfg = self.outlier
        seconds: float = min(cfg.base_ejection * 2.0 ** replica.ejections, cfg.max_ejection)
        replica.ejections += 1
        replica.ejected_until = now + seconds
        return seconds

    def checked(self, replica: Replica, ok: bool, health: HealthConfig) -> bool:
        """An active check's result; True when it changed the replica's state."""
        if ok == replica.checked_up:
            replica.streak = 0
            return False
        replica.streak += 1
        needed = health.healthy_threshold if ok else health.unhealthy_threshold
        if replica.streak < needed:
            return False
        replica.checked_up, replica.streak = ok, 0
        if ok:  # back in service: a clean record, no ejection held over
            replica.failures = replica.ejections = 0
            replica.ejected_until = 0.0
        return True

    def unavailable_reason(self, now: float) -> str:
        parts = []
        for r in self.replicas:
            if not r.checked_up:
                parts.append(f"replica {r.index} fails its health checks")
            elif now < r.ejected_until:
                parts.append(f"replica {r.index} is ejected for another "
                             f"{r.ejected_until - now:.1f} s after failed requests")
        return "no healthy replica: " + "; ".join(parts)
