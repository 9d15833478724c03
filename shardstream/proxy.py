"""Route mode: relay a request to the one shard that owns it.

The owner comes from a global id in the path, a ``shard_map`` key in the
path, or a field of the JSON body. A body that needs no rewrite is streamed
to the shard while the client is still sending it (see
:class:`StreamedUpload`); one that does (the owner is in it, or it carries
global ids to turn back into local ones) is read whole, bounded by the
route's ``max_body``. The shard's response comes back streamed and unparsed,
unless the route rewrites ids in it (then it is read whole, bounded the same
way). A shard that fails after the response has begun cannot be reported
in-band, so the client's connection is aborted: a cut response must never
look complete.
"""

from __future__ import annotations

import io
import json
from decimal import Decimal
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.web.client import FileBodyProducer
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from . import ids
from .config import Route
from .encode import encode_value
from .errors import ShardError, failure_answer, respond_error
from .headers import end_to_end, upstream_request_headers
from .routing import Match, RoutingError

_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})
_WRITES = _BODY_METHODS | {b"DELETE"}
_CONNECT_BUFFER = 256 * 1024  # body bytes held while the shard connection opens


class BadBody(RoutingError):
    status = 400
    code = "bad_body"


class CrossShard(RoutingError):
    status = 400
    code = "cross_shard_reference"


@implementer(IBodyProducer)
class StreamedUpload:
    """The client's request body, handed to the shard request as it arrives.

    twisted.web calls ``write`` for each chunk it decodes and ``finish`` at the
    end; the HTTP client pauses us when the shard reads slowly, and we pause
    reading from the client in turn.
    """

    def __init__(self, client_transport: Any, length: int | None) -> None:
        self.transport = client_transport
        self.length = UNKNOWN_LENGTH if length is None else length
        self.sent = Deferred()  # fires when the whole body went to the shard
        self._consumer: Any = None
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._finished = False
        self._stopped = False

    # -- from the client side --------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._stopped:
            return
        if self._consumer is not None:
            self._consumer.write(data)
            return
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered > _CONNECT_BUFFER:
            self._pause_client()

    def finish(self) -> None:
        self._finished = True
        self._resume_client()
        if self._consumer is not None and not self._stopped and not self.sent.called:
            self.sent.callback(None)

    def abort(self, reason: Exception) -> None:
        """The upload cannot complete: make the shard request fail, unsent."""
        was_stopped, self._stopped = self._stopped, True
        self._resume_client()
        if self._consumer is not None and not was_stopped and not self.sent.called:
            self.sent.errback(reason)  # the HTTP client aborts the request

    # -- IBodyProducer, driven by the HTTP client ------------------------------------

    def startProducing(self, consumer: Any) -> Deferred:
        self._consumer = consumer
        buffered, self._buffer, self._buffered = self._buffer, [], 0
        for data in buffered:
            consumer.write(data)
        self._resume_client()
        if self._finished and not self.sent.called:
            self.sent.callback(None)
        return self.sent

    def pauseProducing(self) -> None:
        self._pause_client()

    def resumeProducing(self) -> None:
        self._resume_client()

    def stopProducing(self) -> None:
        self._stopped = True
        self._resume_client()  # keep draining the client; the rest is discarded

    def _pause_client(self) -> None:
        if not self._paused and not self._finished:
            self._paused = True
            self.transport.pauseProducing()

    def _resume_client(self) -> None:
        if self._paused:
            self._paused = False
            self.transport.resumeProducing()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _loads(body: bytes) -> Any:
    """Strict JSON with exact numbers (big ints stay ints, decimals stay Decimal)."""
    return json.loads(body, parse_float=Decimal, parse_constant=_no_constant)


@implementer(IPushProducer)
class Relay:
    """Writes one shard's response to the client: the Sink of a shard call.

    It may be created before twisted.web has the whole request (to stream the
    body); until ``attach`` is called from ``render``, whatever the shard
    answers is held (the shard's transport paused), because twisted.web cannot
    respond to a request it is still reading.
    """

    def __init__(self, request: Any, gateway: Any, route: Route, shard: str) -> None:
        self.request = request
        self.gateway = gateway
        self.route = route
        self.shard = shard
        self.call: Any = None
        self.upload: StreamedUpload | None = None
        self.gone = False
        self.committed = False
        self.attached = False
        self.client_paused = False
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
                self.call.resume()  # the body the shard call kept back flows now

    def cancel(self) -> None:
        """Drop the shard request (the client is gone, or the gateway answers itself)."""
        self.gone = True
        if self.call is not None:
            self.call.cancel()
        if self.upload is not None:
            self.upload.abort(RuntimeError("request abandoned"))

    # -- Sink ------------------------------------------------------------------

    def response(self, response: Any) -> bool:
        if self.gone:
            return False
        if not self.attached:
            self._held = response
            self.call.pause()
            return True
        self._respond(response)
        return True

    def _respond(self, response: Any) -> None:
        request = self.request
        self.committed = True
        request.setResponseCode(response.code, response.phrase)
        for name, values in end_to_end(response.headers, drop=(b"content-length",)):
            if any(values):  # the gzip decoder leaves an empty Content-Encoding behind
                request.responseHeaders.setRawHeaders(name, values)
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
            if self.request.method in _WRITES:
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
            body = self._rewritten(b"".join(self._rewrite))
            if body is None:
                self.request.unregisterProducer()
                self._error(502, "bad_shard_response", "the shard's 2xx response is not JSON "
                            "the gateway can rewrite ids in")
                return
            self.request.setHeader(b"content-length", b"%d" % len(body))
            self.request.write(body)
        self.request.unregisterProducer()
        self.request.finish()

    def _rewritten(self, body: bytes) -> bytes | None:
        """The body with global ids, or None when it cannot be rewritten (never
        leak local ids as if they were global)."""
        if not body.strip():
            return body  # nothing to rewrite (e.g. 204)
        try:
            doc = _loads(body)
            target = ids.lookup(doc, tuple(self.route.item.split("."))) if self.route.item else doc
            if target is None:
                return body
            ids.globalize(target, ids.split_paths(self.route.id_fields), self.shard)
            return encode_value(doc)
        except Exception:
            return None

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
        if self.committed and self._rewrite is None:
            self.gone = True
            request.channel.transport.abortConnection()
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


def streams_body(route: Route, method: bytes) -> bool:
    """Can this route-mode request's body go to the shard unread?"""
    return not route.shard_key_body and not (route.id_fields and method in _BODY_METHODS)


def start_streaming(request: Any, gateway: Any, match: Match, length: int | None) -> Relay | None:
    """Start a route-mode request whose body is still arriving, if the path
    alone names its owner and the body needs no rewrite."""
    method, uri = request.channel._command, request.channel._path
    if match.route.mode != "route" or not streams_body(match.route, method):
        return None
    target = gateway.router.owner(match, uri)
    if target is None:
        return None
    shard, path = target
    relay = Relay(request, gateway, match.route, shard)
    relay.upload = StreamedUpload(request.channel.transport, length)
    request.notifyFinish().addErrback(relay.client_gone)
    relay.send(method, path, relay.upload, relay.upload.sent)
    return relay


def start(request: Any, gateway: Any, match: Match) -> None:
    """A route-mode request whose body (if any) twisted.web has read whole."""
    route = match.route
    content = request.content
    content.seek(0)
    body = content.read()
    target = gateway.router.owner(match, request.uri)
    headers = upstream_request_headers(request, scatter=False)
    if not streams_body(route, request.method) and (body or route.shard_key_body):
        shard, path, body = _rewrite_body(gateway, route, target, body, request.uri)
        headers.setRawHeaders(b"content-type", [b"application/json"])
    else:
        assert target is not None
        shard, path = target
    producer = None
    if body or request.method in _BODY_METHODS:
        producer = FileBodyProducer(io.BytesIO(body))
    relay = Relay(request, gateway, route, shard)
    request.notifyFinish().addErrback(relay.client_gone)
    relay.send(request.method, path, producer, headers=headers)
    relay.attach()


def _rewrite_body(gateway: Any, route: Route, target: tuple[str, bytes] | None, body: bytes,
                  uri: bytes) -> tuple[str, bytes, bytes]:
    """Owner from the body if need be; global ids in it back to local ones."""
    try:
        doc = _loads(body) if body else None
    except (ValueError, RecursionError):
        raise BadBody("the request body is not valid JSON") from None
    if route.shard_key_body:
        if not isinstance(doc, dict):
            raise BadBody("the request body must be a JSON object")
        shard, path = gateway.router.body_owner(route, doc), uri
    else:
        assert target is not None
        shard, path = target
    named: set[str] = set()
    if route.shard_key_body:  # a path from the body's root
        named |= ids.localize(doc, ids.split_paths([route.shard_key_body]))
    if route.id_fields:  # paths inside the resource object (route.item), else the root
        obj = ids.lookup(doc, tuple(route.item.split("."))) if route.item else None
        named |= ids.localize(obj if obj is not None else doc, ids.split_paths(route.id_fields))
    others = sorted(named - {shard})
    if others:
        raise CrossShard(f"the body refers to shard {others[0]!r} but the write goes to shard "
                         f"{shard!r}; nothing was written")
    try:
        return shard, path, encode_value(doc)
    except Exception:
        raise BadBody("the request body cannot be re-encoded (nested too deeply, or a lone "
                      "surrogate in a string)") from None
