"""A client's request body, streamed to the shard while it still arrives."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

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
        self.sent: Deferred[None] = Deferred()  # fires when the whole body went to the shard
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
