"""Is this gateway ready for traffic? The answer a load balancer reads at
``/readyz``, decided without I/O from what the shell knows: whether it is
draining and which shards have a replica to send to.

Liveness (``/livez``) is simpler and is the shell's alone: the reactor
answered. Readiness is about the requests to come: a draining gateway is
not ready, so that load balancers stop sending to it before it closes its
listener; and a gateway that can reach fewer shards than ``ready_min_shards``
would answer every list with most of it missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .config import AdminConfig


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str
    unavailable: tuple[str, ...]  # shards with no available replica
    required: int
    total: int

    def body(self) -> dict[str, Any]:
        return {
            "status": "ready" if self.ready else "not_ready",
            "reason": self.reason,
            "shards": {"total": self.total, "available": self.total - len(self.unavailable),
                       "required": self.required, "unavailable": list(self.unavailable)},
        }


def readiness(admin: AdminConfig, shards: Sequence[str], unavailable: Sequence[str],
              draining: bool) -> Readiness:
    """Ready when not draining and at least ``admin.ready_min_shards`` of
    ``shards`` have an available replica (``unavailable`` lists the others)."""
    total = len(shards)
    required = min(admin.required(total), total)
    out = set(unavailable)
    down = tuple(s for s in shards if s in out)
    available = total - len(down)
    if draining:
        return Readiness(False, "draining: the gateway is shutting down", down, required, total)
    if available < required:
        return Readiness(False, f"{available} of {total} shards have an available replica; "
                         f"{required} are required (admin.ready_min_shards)", down, required,
                         total)
    return Readiness(True, f"{available} of {total} shards have an available replica", down,
                     required, total)
