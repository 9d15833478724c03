"""Route mode: relay a request to the one shard that owns it.

The owner comes from a global id in the path, a ``shard_map`` key in the
path, or a field of the JSON body (:class:`~shardstream.core.routing.Router`).
A body that needs no rewrite is streamed to the shard while the client is
still sending it (:class:`~shardstream.web.upload.StreamedUpload`); one that
does (the owner is in it, or it carries global ids to turn back into local
ones, :mod:`shardstream.core.rewrite`) is read whole, bounded by the route's
``max_body``. The shard's response comes back streamed and unparsed, unless
the route rewrites ids in it (then it is read whole, bounded the same way).
A shard that fails after the response has begun cannot be reported in-band,
so the client's connection is aborted: a cut response must never look
complete.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.web.client import FileBodyProducer
from twisted.web.iweb import UNKNOWN_LENGTH, IResponse
from twisted.web.server import Request
from zope.interface import implementer

from ..core import rewrite
from ..core.config import Route
from ..core.errors import ShardError, failure_answer
from ..core.outcome import Outcome
from ..core.retry import BODY_METHODS, WRITES
from ..core.routing import FindInstead, Match
from ..upstream.balancer import BalancedCall
from . import record as record_mod
from .errors import cut_response, respond_error
from .headers import end_to_end, upstream_request_headers
from .upload import StreamedUpload

if TYPE_CHECKING:
    from .gateway import Gateway


@implementer(IPushProducer)
class Relay:
    """Writes one shard's response to the client: the ShardSink of a shard call.

    It may be created before twisted.web has the whole request (to stream the
    body); until ``attach`` is called from ``render``, whatever the shard
    answers is held (the shard's transport paused), because twisted.web cannot
    respond to a request it is still reading.
    """

    def __init__(self, request: Request, gateway: "Gateway", route: Route, shard: str) -> None:
        self.request = request
        self.gateway = gateway
        self.route = route
        self.shard = shard
        self.call: BalancedCall | None = None
        self.upload: StreamedUpload | None = None
        self.gone = False
        self.committed = False
        self.attached = False
        self.client_paused = False
        self.error: ShardError | None = None  # the shard's failure, as the client was told
        self._held: Any = None  # a response or ShardError that came before attach
        self._rewrite: list[bytes] | None = None  # body being collected for id rewriting
        self._rewrite_size = 0

    def send(self, method: bytes, uri: bytes, body: Any, body_sent: Deferred | None = None,
             headers: Any = None) -> None:
        if headers is None:
            headers = upstream_request_headers(self.request, scatter=False)
        if self.route.id_fields:  # ids are rewritten in the body: it must not be compressed
            headers.setRawHeaders(b"accept-encoding", [b"identity"])
        self.call = self.gateway.balancer.call(self.shard, method, uri, headers, body, self,
                                               body_sent=body_sent)

    def attach(self) -> None:
        """twisted.web has the whole request: the response may now be written."""
        self.attached = True
        if self.gone:
            return
        held, self._held = self._held, None
        if isinstance(held, ShardError):
            self.failed(held)
            return
        self.request.registerProducer(self, True)  # may pause us at once
        if held is not None:
            self._respond(held)
            if not self.client_paused:
                assert self.call is not None  # held: it came from the call
                self.call.resume()  # the body the shard call kept back flows now

    def outcome(self) -> Outcome:
        return Outcome(asked=1, failed={self.shard: self.error.code} if self.error else {})

    def cancel(self) -> None:
        """Drop the shard request (the client is gone, or the gateway answers itself)."""
        self.gone = True
        if self.call is not None:
            self.call.cancel()
        if self.upload is not None:
            self.upload.abort(RuntimeError("request abandoned"))

    # -- Sink ------------------------------------------------------------------

    def response(self, response: IResponse) -> bool:
        if self.gone:
            return False
        if not self.attached:
            self._held = response
            assert self.call is not None  # a sink hears from its call once call() returned
            self.call.pause()
            return True
        self._respond(response)
        return True

    def _respond(self, response: Any) -> None:
        request = self.request
        self.committed = True
        request.setResponseCode(response.code, response.phrase)
        hidden = tuple(h.encode() for h in self.gateway.config.server.hide_headers)
        for name, values in end_to_end(response.headers, drop=(b"content-length", *hidden)):
            if any(values):  # the gzip decoder leaves an empty Content-Encoding behind
                request.responseHeaders.setRawHeaders(name, values)
        for name, value in getattr(request, "ratelimit", ()):  # the partner's, not the shard's
            request.responseHeaders.setRawHeaders(name, [value])
        request_id = getattr(request, "request_id", None)
        if request_id:  # the gateway's, whatever the shard answered
            request.setHeader(b"x-request-id", request_id)
        if self.route.id_fields and 200 <= response.code < 300 and request.method != b"HEAD":
            self._rewrite = []  # collect, rewrite ids, then send with its new length
        elif request.method == b"HEAD":
            length = response.headers.getRawHeaders(b"content-length")
            if length:
                request.responseHeaders.setRawHeaders(b"content-length", length[-1:])
        elif response.length is not UNKNOWN_LENGTH:
            request.setHeader(b"content-length", b"%d" % response.length)

    def data(self, data: bytes) -> bool:
        if self.gone:
            return False
        if self._rewrite is None:
            self.request.write(data)
            return True
        self._rewrite.append(data)
        self._rewrite_size += len(data)
        if self._rewrite_size > self.gateway.config.max_body(self.route):
            if self.request.method in WRITES:
                # The write happened: say so, with the shard's own ids, rather than a 502
                # that would make the client write again.
                self.request.setHeader(b"shardstream-warning",
                                       b"ids not rewritten: response over max_body")
                chunks, self._rewrite = self._rewrite, None
                for chunk in chunks:
                    self.request.write(chunk)
                return True
            self.committed = False
            self.request.unregisterProducer()
            self._error(502, "response_too_large", "the shard's response is too large to "
                        "rewrite its ids (over max_body)")
            return False
        return True

    def end(self) -> None:
        if self.gone:
            return
        if self._rewrite is not None:
            body = rewrite.response_body(self.route, self.shard, b"".join(self._rewrite))
            if body is None:
                self.request.unregisterProducer()
                self._error(502, "bad_shard_response", "the shard's 2xx response is not JSON "
                            "the gateway can rewrite ids in")
                return
            self.request.setHeader(b"content-length", b"%d" % len(body))
            self.request.write(body)
        self.request.unregisterProducer()
        self.request.finish()

    def failed(self, error: ShardError) -> None:
        if self.gone:
            return
        if self.upload is not None:
            self.upload.stopProducing()
        if not self.attached:
            self._held = error
            return
        request = self.request
        request.unregisterProducer()
        self.error = error
        if self.committed and self._rewrite is None:
            self.gone = True
            cut_response(request, self.gateway.client.reactor)
            return
        status, code = failure_answer([error], "shard_timeout", "shard_unavailable")
        self._error(status, code, f"shard {self.shard}: {error.message}", shard_error=error.code)

    def _error(self, status: int, code: str, message: str, **extra: Any) -> None:
        self.gone = True
        request = self.request
        request.responseHeaders = type(request.responseHeaders)()
        respond_error(request, status, code, message, shard=self.shard, **extra)
        if self.call is not None:
            self.call.cancel()

    # -- IPushProducer -----------------------------------------------------------

    def pauseProducing(self) -> None:
        self.client_paused = True
        if self.call is not None:
            self.call.pause()

    def resumeProducing(self) -> None:
        self.client_paused = False
        if self.call is not None:
            self.call.resume()

    def stopProducing(self) -> None:
        self.client_gone(None)

    def client_gone(self, reason: Any) -> None:
        if not self.gone:
            self.cancel()


def start_streaming(request: Request, gateway: "Gateway", match: Match,
                    length: int | None) -> Relay | None:
    """Start a route-mode request whose body is still arriving, if the path
    alone names its owner and the body needs no rewrite."""
    method, uri = request.channel._command, request.channel._path
    if match.route.mode != "route" or not rewrite.streams_body(match.route, method):
        return None
    target = gateway.router.owner(match, uri, method.decode("ascii", "replace"))
    if target is None:
        return None
    shard, path = target
    relay = Relay(request, gateway, match.route, shard)
    record_mod.recorded(request, relay.outcome)
    relay.upload = StreamedUpload(request.channel.transport, length)
    request.notifyFinish().addErrback(relay.client_gone)
    relay.send(method, path, relay.upload, relay.upload.sent)
    return relay


def start(request: Request, gateway: "Gateway", match: Match) -> None:
    """A route-mode request whose body (if any) twisted.web has read whole."""
    route = match.route
    content = request.content
    assert content is not None  # twisted.web has read the body into it
    content.seek(0)
    body = content.read()
    method = request.method.decode("ascii", "replace")
    try:
        target = gateway.router.owner(match, request.uri, method)
    except FindInstead as e:  # a read for a key the directory lacks: ask every shard
        from .find import FindResponse

        kind, key = e.kind, e.key
        FindResponse(request, gateway, match,
                     found=lambda shard: gateway.directory.remember_found(kind, key, shard)
                     ).start()
        return
    headers = upstream_request_headers(request, scatter=False)
    body_owner = route.owner is not None and route.owner.shard_key_body is not None
    if not rewrite.streams_body(route, request.method) and (body or body_owner):
        shard, path, body = rewrite.request_body(gateway.router, route, target, body, request.uri,
                                                 method)
        headers.setRawHeaders(b"content-type", [b"application/json"])
    else:
        assert target is not None
        shard, path = target
    producer = None
    if body or request.method in BODY_METHODS:
        producer = FileBodyProducer(io.BytesIO(body))
    relay = Relay(request, gateway, route, shard)
    record_mod.recorded(request, relay.outcome)
    request.notifyFinish().addErrback(relay.client_gone)
    relay.send(request.method, path, producer, headers=headers)
    relay.attach()

