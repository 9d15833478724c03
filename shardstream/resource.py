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
        gateway = getattr(request, "gateway", None) or self.gateway
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
        if getattr(request, "proxy", None) is not None:
            request.proxy.attach()  # started when the headers came in
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
    """A request that is bounded by ``server.max_body`` and pinned to one gateway.

    Its gateway is chosen when its headers are in, so a reload never changes
    the rules in the middle of a request. A route-mode request with a body is
    started at that moment too, and its body streamed to the shard as it
    arrives; any other body is spooled by twisted.web as usual. Past the
    limit we keep reading (so the connection stays usable) but store and
    forward nothing.
    """

    too_large = False
    gateway: Gateway | None = None
    proxy: ProxyResponse | None = None
    _received = 0

    def gotLength(self, length: int | None) -> None:
        gateway = self.gateway = self.channel.site.resource.gateway
        if length is not None and length > gateway.config.server.max_body:
            self.too_large = True
            self.content = io.BytesIO()
            return
        if length != 0:
            self.proxy = _streaming_proxy(self, gateway, length)
            if self.proxy is not None:
                self.content = io.BytesIO()
                return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.too_large:
            return
        self._received += len(data)
        if self._received > self.gateway.config.server.max_body:
            self.too_large = True
            if self.proxy is not None:
                self.proxy.cancel()  # the shard gets a cut body and a reset: nothing written
            else:
                self.content.close()
                self.content = io.BytesIO()
            return
        if self.proxy is not None:
            self.proxy.upload.write(data)
        else:
            super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.proxy is not None and not self.too_large:
            self.proxy.upload.finish()
        super().requestReceived(command, path, version)


def _streaming_proxy(request: GatewayRequest, gateway: Gateway, length: int | None) -> ProxyResponse | None:
    """Start a route-mode request whose body is still arriving, if that is what it is."""
    method, uri = request.channel._command, request.channel._path
    try:
        match = gateway.router.match(method.decode("ascii", "replace"),
                                     uri.split(b"?", 1)[0].decode("latin-1"))
        if match.route.mode != "route":
            return None
        shard = gateway.config.shard(gateway.router.owner(match))
    except RoutingError:
        return None  # answered in render, once the (bounded) body is read
    proxy = ProxyResponse(request, gateway, shard)
    proxy.start_streaming(method, uri, length)
    return proxy


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
