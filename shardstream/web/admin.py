"""The gateway's own endpoints: ``/livez``, ``/readyz``, ``/healthz`` and
``/metrics``.

On the main endpoint (no ``admin.listen``) they are answered before any
route is matched, for GET and HEAD only (any other method falls through to
the routes), and never cached. With ``admin.listen`` they are served there
only (:class:`AdminResource`), and the main endpoint routes those paths like
any other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from twisted.web.resource import Resource
from twisted.web.server import Request

from ..core.errors import error_body
from ..core.readiness import readiness
from ..observe.metrics import CONTENT_TYPE, metrics

if TYPE_CHECKING:
    from .gateway import Gateway

PATHS = frozenset({b"/livez", b"/readyz", b"/healthz", b"/metrics", b"/openapi.json"})
# What may be asked of the partner-facing endpoint without a key: a load
# balancer's checks, and the API's description.
PUBLIC = frozenset({b"/livez", b"/readyz", b"/openapi.json"})


def on_main(request: Any, config: Any, path: bytes | None = None,
            method: bytes | None = None) -> bool:
    """Is this an admin request the main endpoint answers? /openapi.json
    always; the others all without ``admin.listen`` and [auth]; with [auth]
    only /livez and /readyz (the others are not partner routes: serve them
    on admin.listen); with ``admin.listen``, none of them."""
    path = (path if path is not None else request.path).partition(b"?")[0]
    method = method if method is not None else request.method
    if method not in (b"GET", b"HEAD"):
        return False
    if path == b"/openapi.json":  # the API's description, for partners: always here too
        return True
    if config.admin.listen is not None:
        return False
    return path in (PUBLIC if config.auth is not None else PATHS)


def answer(request: Request, gateway: "Gateway", draining: bool) -> bytes | None:
    """The body of an admin answer (the status is set), or None: not an admin request."""
    if request.path not in PATHS or request.method not in (b"GET", b"HEAD"):
        return None
    request.setHeader(b"cache-control", b"no-store")
    if request.path == b"/metrics":
        request.setHeader(b"content-type", CONTENT_TYPE.encode())
        return metrics().exposition()
    request.setHeader(b"content-type", b"application/json")
    if request.path == b"/openapi.json":
        return gateway.openapi()
    if request.path == b"/livez":  # the reactor ran this: the process is alive
        return orjson.dumps({"status": "ok"})
    if request.path == b"/readyz":
        shards = [s.name for s in gateway.config.shards]
        ready = readiness(gateway.config.admin, shards, gateway.balancer.unavailable(), draining)
        request.setResponseCode(200 if ready.ready else 503)
        return orjson.dumps(ready.body())
    return orjson.dumps({"status": "ok", "shards": gateway.balancer.status()})


class AdminResource(Resource):
    """The admin endpoint's own site (``admin.listen``): these paths only."""

    isLeaf = True

    def __init__(self, main: Any) -> None:
        super().__init__()
        self.main = main  # the GatewayResource: its gateway and drain state, as they change

    def render(self, request: Request) -> bytes:
        body = answer(request, self.main.gateway, self.main.draining)
        if body is not None:
            return body
        request.setResponseCode(404 if request.path not in PATHS else 405)
        request.setHeader(b"content-type", b"application/json")
        if request.path in PATHS:
            request.setHeader(b"allow", b"GET, HEAD")
            return error_body("method_not_allowed", "the admin endpoints answer GET and HEAD")
        return error_body("not_found", "the admin endpoint serves /livez, /readyz, /healthz, "
                          "/metrics and /openapi.json")
