"""Route mode: relay a request to the one shard that owns it, unparsed.

The request body is streamed to the shard while the client is still sending
it (see :class:`StreamedUpload`); status, end-to-end headers and body come
back as they arrive, and the client's transport pauses the shard's when it is
full. A shard that fails after the response has begun cannot be reported
in-band, so the client's connection is aborted: a cut response must never
look complete.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.web.client import FileBodyProducer
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from .config import Shard
from .errors import ShardError, respond_error
from .headers import end_to_end, upstream_request_headers

_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})
_CONNECT_BUFFER = 256 * 1024  # body bytes held while the shard connection opens


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
        if self._consumer is not None and not self.sent.called:
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
        if not self._paused:
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


@implementer(IPushProducer)
class ProxyResponse:
    """One route-mode request.

    It may start before twisted.web has the whole request (to stream the
    body); until ``attach`` is called from ``render``, whatever the shard
    answers is held (the shard's transport paused), because twisted.web cannot
    respond to a request it is still reading.
    """

    def __init__(self, request: Any, gateway: Any, shard: Shard) -> None:
        self.request = request
        self.gateway = gateway
        self.shard = shard
        self.call: Any = None
        self.upload: StreamedUpload | None = None
        self.gone = False
        self.committed = False
        self.attached = False
        self._held: Any = None  # a response or ShardError that came before attach

    def start_streaming(self, method: bytes, uri: bytes, length: int | None) -> None:
        """Start while the body is still arriving (called when the headers are in)."""
        self.upload = StreamedUpload(self.request.channel.transport, length)
        self.request.notifyFinish().addErrback(self._client_gone)
        self._call(method, uri, self.upload, self.upload.sent)

    def start(self) -> None:
        """Start once twisted.web has the whole request (body spooled, if any)."""
        request = self.request
        request.notifyFinish().addErrback(self._client_gone)
        content = request.content
        content.seek(0, 2)
        has_body = content.tell() > 0
        content.seek(0)
        body = None
        if has_body or request.method in _BODY_METHODS:
            body = FileBodyProducer(content)
        self._call(request.method, request.uri, body, None)
        self.attach()

    def _call(self, method: bytes, uri: bytes, body: Any, body_sent: Deferred | None) -> None:
        self.call = self.gateway.client.call(
            method,
            self.shard.url.encode() + uri,
            upstream_request_headers(self.request, scatter=False),
            body,
            self,
            body_sent=body_sent,
        )

    def attach(self) -> None:
        """twisted.web has the whole request: the response may now be written."""
        self.attached = True
        if self.gone:
            return
        held, self._held = self._held, None
        if isinstance(held, ShardError):
            self.failed(held)
            return
        if held is not None:
            self._respond(held)
            self.call.resume()
        self.request.registerProducer(self, True)

    def cancel(self) -> None:
        """Drop the shard request (the gateway answers the client itself)."""
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
        if request.method == b"HEAD":
            length = response.headers.getRawHeaders(b"content-length")
            if length:
                request.responseHeaders.setRawHeaders(b"content-length", length[-1:])
        elif response.length is not UNKNOWN_LENGTH:
            request.setHeader(b"content-length", b"%d" % response.length)

    def data(self, data: bytes) -> bool:
        if self.gone:
            return False
        self.request.write(data)
        return True

    def end(self) -> None:
        if self.gone:
            return
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
        if self.committed:
            self.gone = True
            request.channel.transport.abortConnection()
            return
        respond_error(
            request,
            504 if error.is_timeout else 502,
            "shard_timeout" if error.is_timeout else "shard_unavailable",
            f"shard {self.shard.name}: {error.message}",
            shard=self.shard.name,
            shard_error=error.code,
        )

    # -- IPushProducer -----------------------------------------------------------

    def pauseProducing(self) -> None:
        if self.call is not None:
            self.call.pause()

    def resumeProducing(self) -> None:
        if self.call is not None:
            self.call.resume()

    def stopProducing(self) -> None:
        self._client_gone(None)

    def _client_gone(self, reason: Any) -> None:
        if self.gone:
            return
        self.cancel()
