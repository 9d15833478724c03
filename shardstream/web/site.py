"""The twisted.web side: the site, its connections, and one leaf resource
that dispatches every request to the response of its route's mode.

A request is matched against the current :class:`~shardstream.web.gateway.Gateway`
once, when its headers are in; a reload swaps the gateway for new requests
while in-flight ones keep the one they started with.
"""

from __future__ import annotations

import io
import time
from typing import Any

from twisted.internet.interfaces import ITCPTransport
from twisted.logger import Logger
from twisted.web import http, server
from twisted.web.resource import Resource

from ..core.directory import Pending
from ..core.errors import BodyTooLarge, ClientError, TryLater, error_body
from ..core.routing import Match
from ..core.keys import Partner, authorize
from ..core.tracing import TraceContext, request_id, trace_context
from ..observe.metrics import metrics, status_class
from . import admin
from . import record as record_mod
from . import limits as limits_mod
from . import relay as relay_mode
from .errors import refuse, respond_error
from .anyshard import AnyResponse
from .find import FindResponse
from .gateway import Gateway
from .relay import Relay
from .scatter import ScatterResponse

log = Logger(namespace="shardstream")

# Directory answers a request may wait for (fetch, place, fetch again at most).
MAX_DIRECTORY_ROUNDS = 3
SERVER = b"shardstream"  # the Server field: a name, no versions
_PHRASES = {431: b"Request Header Fields Too Large"}  # not in twisted.web.http.RESPONSES


class GatewayResource(Resource):
    isLeaf = True

    def __init__(self, gateway: Gateway) -> None:
        super().__init__()
        self.gateway = gateway
        self.draining = False  # set by the service when it begins to stop: /readyz says 503

    def render(self, request: Any) -> Any:
        gateway = getattr(request, "gateway", None) or self.gateway
        if admin.on_main(request, gateway.config):
            body = admin.answer(request, gateway, self.draining)
            if body is not None:
                return body
        self._guarded(request, self._check, request, gateway)
        return server.NOT_DONE_YET

    def _check(self, request: Any, gateway: Gateway) -> None:
        """The key, the route, the body's size, then the partner's limits."""
        denied = getattr(request, "denied", None)
        if denied is not None:
            raise denied  # no key, or not for this route: checked before anything else
        match = getattr(request, "match", None) or gateway.router.match_request(
            request.method, request.uri)
        if getattr(request, "too_large", False):
            limit = gateway.config.max_body(match.route)
            raise BodyTooLarge(f"the request body is over {limit} bytes")
        partner = getattr(request, "partner", None)
        if partner is None or not limits_mod.limited(partner):
            self._dispatch(request, gateway, match)
            return
        d = gateway.limits.take(partner, stream=match.route.mode == "scatter")
        d.addCallback(lambda check: self._guarded(request, self._decided, request, gateway,
                                                  match, partner, check))
        d.addErrback(lambda f: log.failure("internal error in a rate-limit check (request "
                                           "{request_id})", f, request_id=request.request_id))

    def _decided(self, request: Any, gateway: Gateway, match: Match, partner: Partner,
                 check: limits_mod.Check) -> None:
        if request.finished or request._disconnected:
            if check.release is not None:
                check.release()  # the client left while its limit was checked
            return
        limits_mod.apply(request, gateway, partner, check)
        self._dispatch(request, gateway, match)

    def _dispatch(self, request: Any, gateway: Gateway, match: Match) -> None:
        # Its own step: a directory lookup it waits for runs this part again, not the checks.
        self._guarded(request, self._start, request, gateway, match)

    def _start(self, request: Any, gateway: Gateway, match: Match) -> None:
        if getattr(request, "relay", None) is not None:
            request.relay.attach()  # started when the headers came in
        elif match.route.mode == "scatter":
            ScatterResponse(request, gateway, match.route, match.params).start()
        elif match.route.mode == "find":
            FindResponse(request, gateway, match).start()
        elif match.route.mode == "any":
            AnyResponse(request, gateway, match).start()
        else:
            relay_mode.start(request, gateway, match)

    def _guarded(self, request: Any, step: Any, *args: Any, _asked: int = 0) -> None:
        """Run a step of a request: a ClientError is its answer; any other
        error is logged and answered 500. A step that needs the shard
        directory first (Pending) runs again once it has answered."""
        try:
            step(*args)
        except Pending as e:
            if _asked >= MAX_DIRECTORY_ROUNDS:  # a fetched answer must be in memory now
                refuse(request, TryLater("the shard directory does not answer; try again",
                                         retry_after=1, code="directory_unavailable"))
                return
            gateway = getattr(request, "gateway", None) or self.gateway
            d = gateway.directory.resolve(e)
            d.addCallback(lambda _: None if request.finished or request._disconnected
                          else self._guarded(request, step, *args, _asked=_asked + 1))
            d.addErrback(lambda f: self._directory_failed(request, f))
        except ClientError as e:
            refuse(request, e)
        except Exception:
            log.failure("internal error while starting {method} {uri} (request {request_id})",
                        method=request.method, uri=request.uri,
                        request_id=getattr(request, "request_id", b""))
            if not request.startedWriting and not request.finished:
                respond_error(request, 500, "internal_error",
                              "the gateway failed on this request; it is logged")


    def _directory_failed(self, request: Any, failure: Any) -> None:
        if request.finished or request._disconnected:
            return
        if failure.check(ClientError):
            refuse(request, failure.value)
            return
        log.failure("internal error in a shard directory lookup (request {request_id})",
                    failure, request_id=getattr(request, "request_id", b""))
        respond_error(request, 500, "internal_error",
                      "the gateway failed on this request; it is logged")


class NamedRequest(server.Request):
    """A request whose answer's Server field names no versions (Twisted's
    says ``TwistedWeb/26.10.0``: a gift to whoever scans for old ones)."""

    def write(self, data: bytes) -> None:
        if not self.startedWriting:  # the head goes out now
            self.responseHeaders.setRawHeaders(b"server", [SERVER])
        super().write(data)


class GatewayRequest(NamedRequest):
    """A request that is bounded by its route's ``max_body`` and pinned to one gateway.

    Its gateway and route are chosen when its headers are in, so a reload
    never changes the rules in the middle of a request. A route-mode request
    whose body needs no rewrite is started at that moment too, and its body
    streamed to the shard as it arrives; any other body is spooled by
    twisted.web as usual. Past the limit we keep reading (so the connection
    stays usable) but store and forward nothing.
    """

    channel: _Channel  # a TrackingSite's: make_site pairs the two
    too_large = False
    gateway: Gateway | None = None
    match: Match | None = None
    relay: Relay | None = None
    request_id = b""  # X-Request-ID: the client's if well formed, else ours
    trace: TraceContext | None = None
    record: record_mod.Record | None = None
    partner: Partner | None = None  # the API key's, with [auth]
    denied: ClientError | None = None  # 401 or 403, answered once the body is read
    _received = 0
    _limit = 0

    def gotLength(self, length: int | None) -> None:
        headers = self.requestHeaders
        self.request_id = request_id(headers.getRawHeaders(b"x-request-id", [None])[-1])
        self.trace = trace_context(headers.getRawHeaders(b"traceparent", [None])[-1])
        self.setHeader(b"x-request-id", self.request_id)  # on every answer, errors included
        gateway = self.gateway = self.channel.site.resource.gateway
        try:
            self.match = gateway.router.match_request(self.channel._command, self.channel._path)
        except ClientError:
            self.match = None  # render answers it, once the (bounded) body is read
        command, path = self.channel._command, self.channel._path
        label = _route_label(gateway, command, path, self.match)
        self._limit = gateway.config.max_body(self.match.route if self.match else None)
        if length is not None and length > self._limit:
            # Refused at once: no reason to wait for a body we will not read.
            self.channel._refuse(413, "body_too_large", f"the request body ({length} bytes "
                                 f"declared) is over {self._limit} bytes", label,
                                 command.decode("ascii", "replace"), self.request_id)
            self.content = io.BytesIO()
            self.too_large = True
            return
        self.record = record_mod.started(time.monotonic(), label, command, path)
        auth = gateway.config.auth
        if auth is not None and not admin.on_main(self, gateway.config, path=self.channel._path,
                                                  method=self.channel._command):
            try:
                self.partner = self.record.partner = authorize(
                    auth.keys, _header(headers, b"authorization"),
                    _header(headers, auth.header.encode()) if auth.header else None,
                    self.match.route.path.text if self.match else None,
                    self.channel._command.decode("ascii", "replace"))
            except ClientError as e:
                self.denied = e
        if (length != 0 and self.match is not None and self.denied is None
                and not (self.partner is not None and limits_mod.limited(self.partner))):
            try:
                self.relay = relay_mode.start_streaming(self, gateway, self.match, length)
            except Exception:
                self.relay = None  # render answers it, once the (bounded) body is read
            if self.relay is not None:
                self.content = io.BytesIO()
                return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.too_large:
            return
        self._received += len(data)
        if self._received > self._limit:
            self.too_large = True
            if self.relay is not None:
                self.relay.cancel()  # the shard gets a cut body and a reset: nothing written
            else:
                assert self.content is not None  # gotLength made it
                self.content.close()
                self.content = io.BytesIO()
            return
        if self.relay is not None:
            assert self.relay.upload is not None  # a streaming relay has one
            self.relay.upload.write(data)
        else:
            super().handleContentChunk(data)

    def write(self, data: bytes) -> None:
        if data and self.record is not None and self.record.first is None:
            self.record.first = time.monotonic()  # a list's first write holds its first item
        super().write(data)

    def connectionLost(self, reason: Any) -> None:
        if not self.finished and self.record is not None:
            self._ended("aborted" if self.record.cut else "client_gone")
        super().connectionLost(reason)

    def _ended(self, outcome: str) -> None:
        if self.record is not None and self.gateway is not None:
            record_mod.ended(self, self.record, time.monotonic(), outcome,
                             self.gateway.config.server.access_log)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.relay is not None and not self.too_large:
            assert self.relay.upload is not None  # a streaming relay has one
            self.relay.upload.finish()
        super().requestReceived(command, path, version)


class _Channel(http.HTTPChannel):
    site: TrackingSite  # set by Site.buildProtocol
    transport: ITCPTransport  # Protocol's says ITransport | None; a client's is TCP (or TLS)

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.channels.add(self)
        gateway = getattr(self.site.resource, "gateway", None)
        if gateway is not None and hasattr(self.transport, "bufferSize"):
            # Bytes Twisted queues for this client before it pauses our producer
            # (and so the shards): the per-response memory bound for slow readers.
            self.transport.bufferSize = gateway.config.server.write_buffer
        self._start_header_timer()  # a new connection that sends nothing is slow too

    # No default for reason, unlike Protocol's: Twisted always passes one.
    def connectionLost(self, reason: Any) -> None:  # type: ignore[override]
        self.site.channels.discard(self)
        if self._header_timer is not None and self._header_timer.active():
            self._header_timer.cancel()
        super().connectionLost(reason)

    def _respondToBadRequestAndDisconnect(self) -> None:
        """twisted.web's answer to a request it cannot parse, as our JSON error
        (its header limits land here too: we say which)."""
        if self._too_big is not None:
            self._refuse(*self._too_big)
            return
        self._refuse(400, "bad_request", "the request is not valid HTTP/1.1 (a malformed "
                     "request line or header, or bytes outside ASCII in the target)")

    def _refuse(self, status: int, code: str, message: str, route: str = "unmatched",
                method: str = "other", rid: bytes | None = None) -> None:
        """Answer at once, without a request to answer on (its head is bad, or
        its body too large to read), then close. It carries a request id like
        every answer (the client's, if its header came before the problem),
        and gets its log line."""
        if rid is None:
            partial = self.requests[-1] if self.requests else None  # the head read so far
            given = (partial.requestHeaders.getRawHeaders(b"x-request-id", [None])[-1]
                     if partial is not None else None)
            rid = request_id(given)
        body = error_body(code, message)
        phrase = http.RESPONSES.get(status) or _PHRASES.get(status, b"Error")
        self.transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\nX-Request-ID: %s\r\n"
                             b"Connection: close\r\n\r\n%s"
                             % (status, phrase, len(body), rid, body))
        metrics().requests.labels(route, record_mod.known_method(method),
                                  status_class(status)).inc()
        gateway = getattr(self.site.resource, "gateway", None)
        if gateway is None or gateway.config.server.access_log:
            peer = self.transport.getPeer()
            log.info("{client} refused {status} {code} request_id={request_id}",
                     event="refused", client=getattr(peer, "host", None) or "-",
                     status=status, code=code, route=route, method=method,
                     request_id=rid.decode("ascii"))
        self.loseConnection()

    _too_big: tuple[int, str, str] | None = None
    _header_timer: Any = None
    _awaiting_head = True  # between requests, or in a request's line and headers

    def _in_request_line(self) -> bool:
        return bool(getattr(self, "_HTTPChannel__first_line", 1))

    def dataReceived(self, data: bytes) -> None:
        self._start_header_timer()
        super().dataReceived(data)

    def _start_header_timer(self) -> None:
        """Between requests the timer waits for a first byte (an idle
        keep-alive connection is Twisted's idle timeout's business)."""
        timeout = getattr(self.site, "header_timeout", None)
        if (self._awaiting_head and self._header_timer is None and timeout
                and not getattr(self, "_handlingRequest", False)):
            from twisted.internet import reactor

            self._header_timer = reactor.callLater(timeout, self._headers_late)

    def lineReceived(self, line: bytes) -> Any:
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self._too_big = ((414, "uri_too_long", "the request line is over "
                              f"{self.totalHeadersSize} bytes") if self._in_request_line()
                             else (431, "headers_too_large", "the request's headers are over "
                                   f"{self.totalHeadersSize} bytes"))
        return super().lineReceived(line)

    def headerReceived(self, line: bytes) -> bool:
        if self._receivedHeaderCount + 1 > self.maxHeaders:
            self._too_big = (431, "headers_too_large",
                             f"the request has more than {self.maxHeaders} header fields")
        return bool(super().headerReceived(line))

    def lineLengthExceeded(self, line: bytes) -> None:
        """A line over MAX_LENGTH (twisted.web closes without a word)."""
        if self._in_request_line():
            self._refuse(414, "uri_too_long", f"the request line is over {self.MAX_LENGTH} bytes")
        else:
            self._refuse(431, "headers_too_large", f"a header line is over {self.MAX_LENGTH} "
                         "bytes")

    def allHeadersReceived(self) -> None:
        self._awaiting_head = False
        if self._header_timer is not None and self._header_timer.active():
            self._header_timer.cancel()
        self._header_timer = None
        super().allHeadersReceived()

    def requestDone(self, request: Any) -> None:
        self._awaiting_head = True  # the next request's head, when its bytes come
        super().requestDone(request)

    def _headers_late(self) -> None:
        """A client that sends its request head too slowly (slowloris) is closed."""
        self._header_timer = None
        if self._awaiting_head and self.transport is not None:
            self._refuse(408, "request_timeout", "the request's head did not arrive within "
                         f"{self.site.header_timeout:g} s")


class TrackingSite(server.Site):
    """A Site that knows its open connections, to close them on the way out."""

    # Twisted types it as the factory of its HTTP/1-or-2 wrapper only; a channel class works.
    protocol = _Channel  # type: ignore[assignment]

    def __init__(self, resource: Any, **kwargs: Any) -> None:
        super().__init__(resource, **kwargs)
        self.channels: set[_Channel] = set()
        self.header_timeout = 0.0  # close a connection whose request head is this late

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        gateway = getattr(self.resource, "gateway", None)
        if gateway is not None:
            server_config = gateway.config.server
            channel.totalHeadersSize = server_config.max_header_bytes
            channel.MAX_LENGTH = server_config.max_header_bytes
            channel.maxHeaders = server_config.max_headers
        return channel

    def log(self, request: Any) -> None:
        """Called by twisted.web when a response is finished: its record ends
        (the access-log event, when enabled, and the metrics). Other requests
        (the demo's shards) are not logged."""
        if isinstance(request, GatewayRequest):
            request._ended("completed")

    def abort_all(self) -> None:
        for channel in list(self.channels):
            channel.transport.abortConnection()


def _header(headers: Any, name: bytes) -> str | None:
    value = headers.getRawHeaders(name, [None])[-1]
    return value.decode("latin-1") if value is not None else None


def _route_label(gateway: Gateway, method: bytes, path: bytes, match: Match | None) -> str:
    """The route a request counts under: its path template, never its path."""
    if admin.on_main(None, gateway.config, path=path, method=method):
        return "admin"
    return match.route.path.text if match is not None else "unmatched"


def make_site(gateway: Gateway) -> TrackingSite:
    site = TrackingSite(GatewayResource(gateway))
    site.requestFactory = GatewayRequest
    site.header_timeout = gateway.config.server.header_timeout
    site.displayTracebacks = False
    return site


def make_admin_site(main: TrackingSite) -> TrackingSite:
    """The ``admin.listen`` endpoint's site, following the main site's gateway."""
    site = TrackingSite(admin.AdminResource(main.resource))
    site.requestFactory = NamedRequest
    return site
