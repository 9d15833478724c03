"""The twisted.web side: one leaf resource that dispatches every request.

A request is matched against the current :class:`Gateway` once, at its
start; a reload swaps the gateway for new requests while in-flight ones
keep the one they started with.
"""

from __future__ import annotations

import io
from typing import Any

from twisted.web import http, server
from twisted.web.resource import Resource

from .config import Config
from .errors import respond_error
from .fanout import ScatterResponse
from .proxy import ProxyResponse
from .routing import MethodNotAllowed, Router, RoutingError
from .upstream import UpstreamClient

HEALTH_PATH = b"/healthz"


class Gateway:
    """Everything a request needs, built from one config."""

    def __init__(self, config: Config, client: UpstreamClient) -> None:
        self.config = config
        self.client = client
        self.router = Router(config)


class GatewayResource(Resource):
    isLeaf = True

    def __init__(self, gateway: Gateway) -> None:
        super().__init__()
        self.gateway = gateway

    def render(self, request: Any) -> Any:
        gateway = self.gateway
        if request.path == HEALTH_PATH and request.method in (b"GET", b"HEAD"):
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"cache-control", b"no-store")
            return b'{"status":"ok"}'
        if getattr(request, "too_large", False):
            limit = gateway.config.server.max_body
            respond_error(
                request, 413, "body_too_large", f"the request body is over {limit} bytes"
            )
            return server.NOT_DONE_YET
        method = request.method.decode("ascii", "replace")
        path = request.path.decode("latin-1")
        try:
            match = gateway.router.match(method, path)
            if match.route.mode == "scatter":
                ScatterResponse(request, gateway, match.route).start()
            else:
                shard = gateway.config.shard(gateway.router.owner(match))
                ProxyResponse(request, gateway, shard).start()
        except RoutingError as e:
            if isinstance(e, MethodNotAllowed):
                request.setHeader(b"allow", ", ".join(e.extra["allow"]).encode())
            respond_error(request, e.status, e.code, e.message, **e.extra)
        return server.NOT_DONE_YET


class GatewayRequest(server.Request):
    """A request whose body is bounded by ``server.max_body``.

    twisted.web reads the whole body before rendering; past the limit we
    keep reading (so the connection stays usable) but store nothing.
    """

    too_large = False
    _received = 0

    def _limit(self) -> int:
        return self.channel.site.resource.gateway.config.server.max_body

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self._limit():
            self.too_large = True
            self.content = io.BytesIO()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.too_large:
            return
        self._received += len(data)
        if self._received > self._limit():
            self.too_large = True
            self.content.close()
            self.content = io.BytesIO()
            return
        super().handleContentChunk(data)


class _Channel(http.HTTPChannel):
    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.channels.add(self)

    def connectionLost(self, reason: Any) -> None:
        self.site.channels.discard(self)
        super().connectionLost(reason)


class TrackingSite(server.Site):
    """A Site that knows its open connections, to close them on the way out."""

    protocol = _Channel

    def __init__(self, resource: Any, quiet: bool = False, **kwargs: Any) -> None:
        super().__init__(resource, **kwargs)
        self.channels: set[_Channel] = set()
        if quiet:
            self.log = lambda request: None

    def abort_all(self) -> None:
        for channel in list(self.channels):
            channel.transport.abortConnection()


def make_site(gateway: Gateway) -> TrackingSite:
    site = TrackingSite(GatewayResource(gateway))
    site.requestFactory = GatewayRequest
    return site
