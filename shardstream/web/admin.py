"""The gateway's own endpoints: ``/livez``, ``/readyz`` and ``/healthz``.

They are answered before any route is matched, for GET and HEAD only (any
other method falls through to the routes), and never cached.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from twisted.web.server import Request

from ..core.readiness import readiness

if TYPE_CHECKING:
    from .gateway import Gateway

PATHS = frozenset({b"/livez", b"/readyz", b"/healthz"})


def answer(request: Request, gateway: "Gateway", draining: bool) -> bytes | None:
    """The body of an admin answer (the status is set), or None: not an admin request."""
    if request.path not in PATHS or request.method not in (b"GET", b"HEAD"):
        return None
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    if request.path == b"/livez":  # the reactor ran this: the process is alive
        return orjson.dumps({"status": "ok"})
    if request.path == b"/readyz":
        shards = [s.name for s in gateway.config.shards]
        ready = readiness(gateway.config.admin, shards, gateway.balancer.unavailable(), draining)
        request.setResponseCode(200 if ready.ready else 503)
        return orjson.dumps(ready.body())
    return orjson.dumps({"status": "ok", "shards": gateway.balancer.status()})
