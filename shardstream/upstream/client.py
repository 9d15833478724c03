"""Requests to shards: one shared connection pool, streamed bodies, deadlines.

A :class:`ShardCall` reports to its :class:`~shardstream.upstream.sink.ShardSink`
exactly once that it ended (``end``) or failed (``failed``), after an
optional ``response`` and any number of ``data`` calls. ``cancel`` drops it
silently: the caller has lost interest. The four deadlines of ``[upstream]``
are enforced here; Twisted's Agent has none of its own past connecting.
"""

from __future__ import annotations

from typing import Any, cast

from OpenSSL.SSL import Error as SSLError
from service_identity import VerificationError
from twisted.internet import error as ierror
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web.client import (
    Agent,
    RequestGenerationFailed,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IResponse

from ..core.config import UpstreamConfig
from ..core.errors import ShardError
from .lean import LeanAgent
from .pool import Endpoints, Pool, QuietFactory
from .tls import ShardTLS
from .sink import ShardSink

log = Logger()




class UpstreamClient:
    """The gateway's one HTTP client: a persistent pool shared by every request.

    Requests go through a bare twisted.web Agent on that pool, not treq:
    treq's extra layers (URL re-encoding through hyperlink, a cookie jar,
    redirects, gzip decoding) cost CPU on the hot path (bench/RESULTS.md),
    re-encode the client's query string and would hide the shard's own
    encoding from a relayed response. List requests ask shards for an
    uncompressed body; relayed ones pass the client's headers through.
    """

    def __init__(self, reactor: Any, config: UpstreamConfig) -> None:
        self.reactor = reactor
        self.config = config
        self._moment: float | None = None  # see start_moment
        self.pool = Pool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = config.max_idle_connections
        self.pool._factory = QuietFactory
        endpoints = Endpoints(reactor, config.connect_timeout, ShardTLS(config))
        twisted_agent = Agent.usingEndpointFactory(reactor, endpoints, pool=self.pool)
        self.lean: LeanAgent | None = None
        self.agent: Any = twisted_agent
        if config.client == "lean":  # GETs on llhttp; writes, HEAD and uploads on Twisted's
            self.lean = self.agent = LeanAgent(reactor, endpoints, twisted_agent,
                                               config.max_idle_connections)

    def start_moment(self) -> float:
        """When a call starting now counts its deadlines from: the moment the
        first call of this reactor turn started. A list request starts its
        shard calls one after another in one turn (each sends at once); from
        one moment their deadlines are one, and ring in one turn, so that
        strict mode names every shard that failed together, however long
        the sends took (a busy host once put 2 ms between two of them)."""
        if self._moment is None:
            self._moment = self.reactor.seconds()
            self.reactor.callLater(0, self._next_turn)
        return self._moment

    def _next_turn(self) -> None:
        self._moment = None

    def call(
        self,
        method: bytes,
        url: bytes,
        headers: Headers,
        body: IBodyProducer | None,
        sink: ShardSink,
        body_sent: Deferred | None = None,
        total_timeout: float | None = None,
    ) -> "ShardCall":
        """Start a request to a shard; its outcome goes to ``sink``.

        ``body_sent``, for a body streamed from a client, fires when it is all
        sent: the first-byte deadline starts then, not while the client uploads.
        ``total_timeout``:
        what is left of the request's own deadline, when this is a retry.
        """
        call = ShardCall(self, sink)
        call.start(method, url, headers, body, body_sent, total_timeout)
        return call

    def retire(self) -> Deferred:
        """This client is being replaced: in-flight requests finish, then every
        connection closes instead of going back to the pool."""
        self.pool.persistent = False
        if self.lean is not None:
            self.lean.persistent = False
            self.lean.close_idle()
        return self.pool.closeCachedConnections()

    def close(self) -> Deferred:
        if self.lean is not None:
            self.lean.close_idle()
        return self.pool.closeCachedConnections()


class _BodyReader(Protocol):
    def __init__(self, call: "ShardCall") -> None:
        self.call = call

    def dataReceived(self, data: bytes) -> None:
        self.call._on_data(data)

    # No default for reason, unlike Protocol's: Twisted always passes one.
    def connectionLost(self, reason: Any) -> None:  # type: ignore[override]
        self.call._on_body_end(reason)


def _producer(reader: Protocol) -> IPushProducer:
    """What a response body is read from: Twisted types a protocol's transport as an
    optional ITransport, but deliverBody connects it to a push producer."""
    return cast(IPushProducer, reader.transport)


class _Drop(Protocol):
    """Body nobody wants: abort the connection instead of reading it."""

    def connectionMade(self) -> None:
        _producer(self).stopProducing()


class ShardCall:
    """One request to one shard.

    Its sink's methods are called from Twisted's HTTP parser; an exception
    raised there must never escape into it (Twisted would end the body as if
    it were complete), so every sink call is guarded and an error in the
    gateway's own code fails the shard loudly instead.
    """

    def __init__(self, client: UpstreamClient, sink: ShardSink) -> None:
        self.client = client
        self.sink = sink
        self.done = False
        self.responded = False
        self.paused = False
        self._d: Deferred | None = None
        self._reader: _BodyReader | None = None
        self._held: IResponse | None = None  # headers in while paused: body not taken yet
        # The four deadlines are moments (reactor seconds, None: not running)
        # watched by one timer set for the earliest: body data moves the idle
        # moment without touching the reactor's timer heap.
        self._deadlines: dict[str, tuple[float, str]] = {}  # name -> (moment, message)
        self._timer: Any = None
        self._last_data = 0.0  # when body data last came, paused time not counted
        self._paused_at = 0.0
        self._chunks: list[bytes] = []  # body data of this reactor turn, not yet handed over
        self._deliver_call: Any = None
        self.request_id = b""  # of the client request it is made for, for the log

    def start(
        self, method: bytes, url: bytes, headers: Headers, body: Any, body_sent: Any = None,
        total_timeout: float | None = None,
    ) -> None:
        self.request_id = (headers.getRawHeaders(b"x-request-id") or [b""])[-1]
        try:
            d = self.client.agent.request(method, url, headers, body)
        except Exception as e:  # e.g. a URL Twisted's client refuses: ours, not the shard's
            self.done = True
            self.client.reactor.callLater(0, self._guard, self.sink.failed, ShardError(
                "internal_error", f"the request could not be made ({e.__class__.__name__}: {e})"))
            return
        total = self.client.config.total_timeout
        moment = self.client.start_moment()
        # Both deadlines before the timer: it is set once, for the earlier.
        self._deadline("total_timeout", total if total_timeout is None else total_timeout,
                       f"the shard did not finish within {total:g} s", moment)
        if body_sent is None:
            self._arm_first_byte(moment)
        else:
            self._set_timer()
            body_sent.addCallback(self._body_sent)
        self._d = d
        d.addCallbacks(self._on_response, self._on_error)

    # -- control from the caller -----------------------------------------

    def cancel(self) -> None:
        """Stop at once and close the connection; the sink hears nothing more."""
        if not self.done:
            self._stop()

    def pause(self) -> None:
        """The consumer is full: stop reading from the shard (TCP backpressure).

        Time spent paused is the client's, not the shard's: the idle deadline
        stops while paused and resumes with what was left of it.
        """
        if self.paused or self.done:
            return
        self.paused = True
        self._paused_at = self.client.reactor.seconds()
        if self._reader is not None:
            _producer(self._reader).pauseProducing()
            self._deadlines.pop("idle_timeout", None)

    def resume(self) -> None:
        if not self.paused or self.done:
            return
        self.paused = False
        if self._held is not None:  # the body was never taken: take it now
            response, self._held = self._held, None
            self._read(response)
        elif self._reader is not None:
            now = self.client.reactor.seconds()
            self._last_data += now - self._paused_at
            self._arm_idle(self.client.config.idle_timeout - (now - self._last_data))
            _producer(self._reader).resumeProducing()

    # -- events ------------------------------------------------------------

    def _on_response(self, response: IResponse) -> None:
        if self.done:
            response.deliverBody(_Drop())
            return
        self._deadlines.pop("first_byte_timeout", None)
        self.responded = True
        keep = self._guard(self.sink.response, response)
        if self.done or not keep:  # refused, or cancelled/failed from inside response()
            if not self.done:
                self._stop_timers()
                self.done = True
            response.deliverBody(_Drop())
            return
        if self.paused:
            # deliverBody would hand over data Twisted has already buffered,
            # pause or not: keep the response until the consumer resumes.
            self._held = response
            return
        self._read(response)

    def _read(self, response: IResponse) -> None:
        self._reader = _BodyReader(self)
        self._last_data = self.client.reactor.seconds()
        response.deliverBody(self._reader)
        if self.done:  # an empty body (204, HEAD) ends inside deliverBody
            return
        if self.paused:
            _producer(self._reader).pauseProducing()
            self._paused_at = self._last_data
        else:
            self._arm_idle(self.client.config.idle_timeout)

    def _on_error(self, failure: Any) -> None:
        if self.done:
            return
        self._stop_timers()
        self.done = True
        self._guard(self.sink.failed, classify(failure, self.request_id))

    def _on_data(self, data: bytes) -> None:
        """Twisted hands over every HTTP chunk on its own (a shard that flushes
        item by item sends thousands); they are gathered and handed to the
        sink once per reactor turn, as one piece."""
        if self.done:
            return
        self._chunks.append(data)
        if self._deliver_call is None:
            self._deliver_call = self.client.reactor.callLater(0, self._deliver)

    def _deliver(self) -> None:
        self._deliver_call = None
        chunks = self._chunks
        if self.done or not chunks:
            return
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        now = self._last_data = self.client.reactor.seconds()
        idle = self._deadlines.get("idle_timeout")
        if idle is not None:  # later, never sooner: the timer need not move
            self._deadlines["idle_timeout"] = (now + self.client.config.idle_timeout, idle[1])
        if not self._guard(self.sink.data, data) and not self.done:
            self._stop()

    def _on_body_end(self, reason: Any) -> None:
        if self.done:
            return
        if self._deliver_call is not None:  # what came before the end goes first
            self._deliver_call.cancel()
            self._deliver()
            if self.done:
                return
        self._stop_timers()
        self.done = True
        if reason.check(ResponseDone, PotentialDataLoss):
            self._guard(self.sink.end)
        else:
            self._guard(self.sink.failed, ShardError(
                "truncated", "the connection closed in the middle of the body"))

    def _guard(self, method: Any, *args: Any) -> Any:
        """Call the sink; a bug of ours fails this shard, loudly, and nothing else."""
        try:
            return method(*args)
        except Exception:
            log.failure("internal error while handling a shard response (request {request_id})",
                        request_id=self.request_id)
            if not self.done:
                self._stop()
                try:
                    self.sink.failed(ShardError("internal_error",
                                                "the gateway could not process this shard's data"))
                except Exception:
                    log.failure("internal error while reporting a shard failure (request "
                                "{request_id})", request_id=self.request_id)
            return False

    def _due(self) -> None:
        """The timer rang: a deadline passed (the earliest), or the idle one
        moved since and the timer is set again for the earliest left."""
        self._timer = None
        if self.done:
            return
        # The timer may ring a hair before its moment (floating point): within
        # a millisecond is due, or deadlines armed together would expire in
        # different reactor turns.
        now = self.client.reactor.seconds() + 0.001
        for code in ("total_timeout", "first_byte_timeout", "idle_timeout"):
            deadline = self._deadlines.get(code)
            if deadline is not None and deadline[0] <= now:
                self._stop()
                self._guard(self.sink.failed, ShardError(code, deadline[1]))
                return
        self._set_timer()

    # -- internals -----------------------------------------------------------

    def _arm(self, code: str, seconds: float, message: str, since: float | None = None) -> None:
        self._deadline(code, seconds, message, since)
        self._set_timer()

    def _deadline(self, code: str, seconds: float, message: str,
                  since: float | None = None) -> None:
        start = self.client.reactor.seconds() if since is None else since
        self._deadlines[code] = (start + max(seconds, 0.0), message)

    def _set_timer(self) -> None:
        """One timer, set for the earliest deadline (moved sooner if needed)."""
        if not self._deadlines:
            return
        moment = min(d[0] for d in self._deadlines.values())
        timer = self._timer
        reactor = self.client.reactor
        if timer is not None:
            if moment >= timer.getTime():
                return
            # Not DelayedCall.reset: moving a call sooner searches the reactor's whole
            # heap (list.index), which under load holds every request's timer; a
            # cancelled call is only counted, and swept in bulk.
            timer.cancel()
        self._timer = reactor.callLater(max(moment - reactor.seconds(), 0.0), self._due)

    def _body_sent(self, result: Any) -> Any:
        self._arm_first_byte()
        return result  # the same Deferred is the HTTP client's: pass it on untouched

    def _arm_first_byte(self, since: float | None = None) -> None:
        if not self.done and self._reader is None and not self.responded:
            t = self.client.config.first_byte_timeout
            self._arm("first_byte_timeout", t, f"no response headers within {t:g} s", since)

    def _arm_idle(self, seconds: float) -> None:
        t = self.client.config.idle_timeout
        self._arm("idle_timeout", seconds, f"no body data for {t:g} s")

    def _stop(self) -> None:
        self.done = True
        self._stop_timers()
        if self._deliver_call is not None:
            self._deliver_call.cancel()
            self._deliver_call = None
        self._chunks = []
        if self._reader is not None:
            _producer(self._reader).stopProducing()
        elif self._held is not None:
            held, self._held = self._held, None
            held.deliverBody(_Drop())
        elif self._d is not None:
            self._d.cancel()

    def _stop_timers(self) -> None:
        self._deadlines.clear()
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None


def _reason(failure: Any) -> Any:
    """The first underlying failure of Twisted's wrapper exceptions."""
    reasons = getattr(failure.value, "reasons", None)
    return reasons[0] if reasons else failure


def _tls_error(reason: Any) -> ShardError:
    if reason.check(VerificationError):
        return ShardError("tls_error", "the shard's certificate is not for its host name")
    return ShardError("tls_error", "TLS handshake with the shard failed (an unknown CA, "
                      "an expired certificate, or no common protocol)")


def classify(failure: Any, request_id: bytes = b"") -> ShardError:
    """Name a failure that happened before the response headers."""
    if failure.check(ierror.ConnectionRefusedError):
        return ShardError("connect_refused", "connection refused")
    if failure.check(ierror.TimeoutError, ierror.ConnectingCancelledError):
        return ShardError("connect_timeout", "could not connect in time")
    if failure.check(ierror.DNSLookupError):
        return ShardError("connect_error", "the shard's host name did not resolve")
    if failure.check(ierror.ConnectError):
        return ShardError("connect_error", _reason(failure).getErrorMessage())
    if failure.check(RequestGenerationFailed, RequestTransmissionFailed):
        if _reason(failure).check(SSLError, VerificationError):
            return _tls_error(_reason(failure))
        return ShardError("request_failed", "the request could not be sent in full")
    if failure.check(ResponseNeverReceived, ResponseFailed):
        reason = _reason(failure)
        if reason.check(SSLError, VerificationError):
            # Not "connect_error": the request (and its body) had been handed
            # to the TLS layer already, so it does not count as never sent.
            return _tls_error(reason)
        return ShardError("no_response", "the connection closed before a response arrived")
    log.failure("unexpected upstream failure (request {request_id})", failure,
                request_id=request_id)
    return ShardError("upstream_error", "the request to the shard failed")
