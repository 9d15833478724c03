"""Route mode: relay a request to the one shard that owns it, unparsed.

Status, end-to-end headers and body are streamed back as they arrive; the
client's transport pauses the shard's when it is full. A shard that fails
after the response has begun cannot be reported in-band, so the client's
connection is aborted: a cut response must never look complete.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.web.client import FileBodyProducer
from twisted.web.iweb import UNKNOWN_LENGTH
from zope.interface import implementer

from .config import Shard
from .errors import ShardError, respond_error
from .headers import end_to_end, upstream_request_headers

_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})


@implementer(IPushProducer)
class ProxyResponse:
    def __init__(self, request: Any, gateway: Any, shard: Shard) -> None:
        self.request = request
        self.gateway = gateway
        self.shard = shard
        self.call: Any = None
        self.gone = False
        self.committed = False

    def start(self) -> None:
        request = self.request
        request.registerProducer(self, True)
        request.notifyFinish().addErrback(self._client_gone)
        content = request.content
        content.seek(0, 2)
        has_body = content.tell() > 0
        content.seek(0)
        body = None
        if has_body or request.method in _BODY_METHODS:
            body = FileBodyProducer(content)
        self.call = self.gateway.client.call(
            request.method,
            self.shard.url.encode() + request.uri,
            upstream_request_headers(request, scatter=False),
            body,
            self,
        )

    # -- Sink ------------------------------------------------------------------

    def response(self, response: Any) -> bool:
        if self.gone:
            return False
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
        return True

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
        self.gone = True
        if self.call is not None:
            self.call.cancel()
