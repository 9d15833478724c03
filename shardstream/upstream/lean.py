"""A lean HTTP/1.1 client for the shards' GETs: httptools (llhttp) on a
keep-alive pool per shard origin.

Twisted's client costs ~0.3 ms of CPU per shard exchange (its line-based
parser, Headers objects, a retrying protocol wrapper, a timer per pooled
connection); a list request makes one exchange per shard. This one parses
with llhttp in C and hands a whole read's body bytes on at once.

It is an ``IAgent`` that serves only GETs without a body. Everything else
(writes, HEAD, uploads, the relayed route mode) goes to the ``fallback``
agent, Twisted's, with its pool that never resends a write: a write is
never sent through here, so never resent from here.

What it keeps of Twisted's semantics, so that :class:`~.client.ShardCall`
and its deadlines work unchanged on either: connection failures are the
endpoint's own exceptions; a connection lost before the headers is
``ResponseNeverReceived``; a body cut short ends its protocol with
``ResponseFailed``, a complete one with ``ResponseDone``; the body's
transport pauses, resumes and stops the connection (TCP backpressure).
A connection goes back to the pool only after a complete response that
keeps it alive, never while it closes; a GET that met a pooled connection
the shard had just closed (no byte of a response) is sent once more on a
new connection, as Twisted's pool does for idempotent requests.
"""

from __future__ import annotations

import re
from typing import Any
import httptools
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed, ResponseNeverReceived, URI
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse, UNKNOWN_LENGTH
from zope.interface import implementer

_DEFAULT_PORTS = {b"http": 80, b"https": 443}
_UNSAFE = re.compile(rb"[^\x21-\x7e]")  # what a request line cannot carry


def _plain_tcp_client() -> type | None:
    """Twisted's TCP client transport, if it still has what write_now relies on."""
    try:
        from twisted.internet.tcp import Client
    except ImportError:  # pragma: no cover - Twisted always has it
        return None
    needed = ("writeSomeData", "write", "dataBuffer", "offset", "connected", "disconnecting",
              "_writeDisconnected", "TLS")
    return Client if all(hasattr(Client, name) for name in needed) else None


_TCP_CLIENT: Any = _plain_tcp_client()  # None: write_now only writes


def write_now(transport: Any, data: bytes) -> None:
    """Send a request at once instead of at the reactor's next turn.

    Twisted's transports queue every write until the poller reports the
    socket writable: two epoll_ctl calls, and a wait for every other event of
    this turn (dozens under load) before the shard even sees the request. A
    request is one small write on an idle connection, so when nothing is
    queued before it, it goes to the kernel now, and Twisted gets only what
    the kernel did not take (or everything, on an error: its own write path
    then notices the loss). TLS and other transports write as before."""
    if (type(transport) is _TCP_CLIENT and transport.connected and not transport.disconnecting
            and not transport._writeDisconnected and not transport.TLS
            and not getattr(transport, "_tempDataBuffer", True)
            and transport.offset == len(transport.dataBuffer)):
        sent = transport.writeSomeData(data)
        if type(sent) is int and sent > 0:
            if sent == len(data):
                return
            data = data[sent:]
    transport.write(data)


# Every complete body ends with the same reason: building a Failure per response
# (it walks the exception's classes) cost more than the rest of the ending.
_DONE = Failure(ResponseDone())


class _Origin:
    """A shard origin: its endpoint, its Host field, its idle connections."""

    __slots__ = ("endpoint", "host", "idle")

    def __init__(self, endpoint: Any, host: bytes) -> None:
        self.endpoint = endpoint
        self.host = host
        self.idle: list[_Connection] = []


@implementer(IAgent)
class LeanAgent:
    """GETs without a body on pooled llhttp connections; the rest to ``fallback``."""

    def __init__(self, reactor: Any, endpoints: Any, fallback: Any, max_idle: int,
                 idle_seconds: float = 240.0) -> None:
        self.reactor = reactor
        self._endpoints = endpoints
        self.fallback = fallback
        self.max_idle = max_idle  # per origin
        self.idle_seconds = idle_seconds  # an idle connection older than this is closed
        self.persistent = True
        self._origins: dict[bytes, _Origin] = {}  # scheme://netloc -> origin
        self._sweep: Any = None

    def request(self, method: bytes, uri: bytes, headers: Headers | None = None,
                bodyProducer: Any = None) -> Deferred:
        if method != b"GET" or bodyProducer is not None:
            return self.fallback.request(method, uri, headers, bodyProducer)
        base, path = _split(uri)
        if _UNSAFE.search(uri):  # as Twisted's client: never a space or a line break in it
            raise ValueError(f"invalid URI {uri!r}")
        origin = self._origins.get(base)
        if origin is None:
            origin = self._origins[base] = self._origin(uri)
        head = [b"GET ", path, b" HTTP/1.1\r\nHost: ", origin.host, b"\r\n"]
        if headers is not None:
            for name, values in headers.getAllRawHeaders():
                if name.lower() == b"host":
                    continue
                for value in values:
                    head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        exchange = _Exchange(self, origin, b"".join(head))
        exchange.send(reuse=True)
        return exchange.d

    def _origin(self, uri: bytes) -> _Origin:
        parsed = URI.fromBytes(uri)
        host = parsed.host
        if b":" in host:  # an IPv6 literal
            host = b"[" + host + b"]"
        if parsed.port != _DEFAULT_PORTS.get(parsed.scheme):
            host += b":%d" % parsed.port
        return _Origin(self._endpoints.endpointForURI(parsed), host)

    # -- the pool ------------------------------------------------------------

    def _take(self, origin: _Origin) -> "_Connection | None":
        idle = origin.idle
        while idle:
            conn = idle.pop()  # the most recent: the least likely to be closed by the shard
            if conn.usable():
                return conn
        return None

    def _put(self, origin: _Origin, conn: "_Connection") -> None:
        if not self.persistent or len(origin.idle) >= self.max_idle or not conn.usable():
            conn.close()
            return
        conn.idle_since = self.reactor.seconds()
        origin.idle.append(conn)
        if self._sweep is None:
            self._sweep = self.reactor.callLater(self.idle_seconds, self._sweep_idle)

    def _sweep_idle(self) -> None:
        """One timer for the whole pool: close what has idled too long."""
        self._sweep = None
        oldest = self.reactor.seconds() - self.idle_seconds
        left = False
        for origin in self._origins.values():
            for conn in [c for c in origin.idle if c.idle_since <= oldest]:
                origin.idle.remove(conn)
                conn.close()
            left = left or bool(origin.idle)
        if left:
            self._sweep = self.reactor.callLater(self.idle_seconds, self._sweep_idle)

    def close_idle(self) -> None:
        """Close every idle connection (a retired client, or shutting down)."""
        for origin in self._origins.values():
            idle, origin.idle = origin.idle, []
            for conn in idle:
                conn.close()
        if self._sweep is not None and self._sweep.active():
            self._sweep.cancel()
        self._sweep = None


def _split(uri: bytes) -> tuple[bytes, bytes]:
    """``(scheme://netloc, path?query)`` of an absolute URL, without parsing it twice."""
    i = uri.find(b"/", uri.find(b"//") + 2)
    if i < 0:
        return uri, b"/"
    return uri[:i], uri[i:]


class _Exchange:
    """One GET: its request bytes, the connection it is on, its Deferred."""

    __slots__ = ("agent", "origin", "data", "d", "conn", "connecting", "cancelled", "resent")

    def __init__(self, agent: LeanAgent, origin: _Origin, data: bytes) -> None:
        self.agent, self.origin, self.data = agent, origin, data
        self.d: Deferred = Deferred(self._cancel)
        self.conn: _Connection | None = None
        self.connecting: Deferred | None = None
        self.cancelled = False
        self.resent = False

    def send(self, reuse: bool) -> None:
        conn = self.agent._take(self.origin) if reuse else None
        if conn is not None:
            conn.start(self, reused=True)
            return
        d = self.connecting = self.origin.endpoint.connect(_FACTORY)
        d.addCallbacks(self._connected, self._not_connected)

    def _connected(self, conn: "_Connection") -> None:
        self.connecting = None
        if self.cancelled:
            conn.close()
            return
        conn.start(self, reused=False)

    def _not_connected(self, failure: Failure) -> None:
        self.connecting = None
        if not self.cancelled:
            self.d.errback(failure)  # the endpoint's own: refused, timeout, ...

    def lost_unanswered(self, reason: Failure, reused: bool) -> None:
        """The connection closed before any byte of a response."""
        if reused and not self.resent and not self.cancelled:
            self.resent = True  # the shard had closed the pooled connection: once more
            self.send(reuse=False)
            return
        self.d.errback(Failure(ResponseNeverReceived([reason])))

    def _cancel(self, d: Deferred) -> None:
        self.cancelled = True  # d fails with CancelledError once this returns
        if self.connecting is not None:
            self.connecting.cancel()
        if self.conn is not None:
            self.conn.abort()


class _BodyTransport:
    """What a response's body protocol reads from: the connection's producer
    side, for as long as that response lasts. Once it is over the connection
    may serve another exchange from the pool, so this one lets go of it: a
    pause asked while the body's end is handed on must not pause the next."""

    __slots__ = ("conn",)

    def __init__(self, conn: "_Connection") -> None:
        self.conn: _Connection | None = conn

    def pauseProducing(self) -> None:
        if self.conn is not None:
            self.conn.pause()

    def resumeProducing(self) -> None:
        if self.conn is not None:
            self.conn.resume()

    def stopProducing(self) -> None:
        if self.conn is not None:
            self.conn.abort()


@implementer(IResponse)
class LeanResponse:
    """The parts of IResponse the gateway reads; headers are built when first asked."""

    def __init__(self, conn: "_Connection", code: int, phrase: bytes,
                 version: tuple[bytes, int, int], raw: list[tuple[bytes, bytes]],
                 length: Any) -> None:
        self._conn = conn
        self.code = code
        self.phrase = phrase
        self.version = version
        self._raw = raw
        self._headers: Headers | None = None
        self.length = length
        self.request = None
        self.previousResponse = None

    @property
    def headers(self) -> Headers:
        if self._headers is None:
            h = Headers()
            for name, value in self._raw:
                h.addRawHeader(name, value)
            self._headers = h
        return self._headers

    def deliverBody(self, protocol: Any) -> None:
        self._conn.deliver(protocol)

    def setPreviousResponse(self, response: Any) -> None:
        self.previousResponse = response


class _Connection(Protocol):
    """One connection to a shard; one exchange at a time."""

    def __init__(self) -> None:
        self.exchange: _Exchange | None = None
        self.reused = False
        self.parser: Any = None
        self.answered = False  # a byte of the response came
        self.response: LeanResponse | None = None
        self.body: Any = None  # the body protocol, once delivered
        self.pending: list[bytes] = []  # body bytes not yet handed on
        self.complete = False  # the whole response is in
        self.lost = False
        self.aborted = False
        self.paused = False
        self.idle_since = 0.0
        self._raw: list[tuple[bytes, bytes]] = []
        self._phrase = b""

    # -- from the pool and the exchange ------------------------------------

    def usable(self) -> bool:
        transport = self.transport
        return (not self.lost and not self.aborted and transport is not None
                and not getattr(transport, "disconnecting", False))

    def start(self, exchange: _Exchange, reused: bool) -> None:
        self.exchange, self.reused = exchange, reused
        exchange.conn = self
        self.parser = httptools.HttpResponseParser(self)
        self.answered = self.complete = False
        self.response = self.body = None
        self.pending = []
        self._raw = []
        assert self.transport is not None
        write_now(self.transport, exchange.data)

    def deliver(self, protocol: Any) -> None:
        self.body = protocol
        self._body_transport = _BodyTransport(self)
        protocol.makeConnection(self._body_transport)
        if self.aborted and not (self.complete or self.lost):
            return  # dropped from makeConnection: connectionLost will end the body
        if self.paused and not self.aborted:  # held before delivery: the protocol takes over
            self.resume()
        self._flush()
        if self.complete:
            self._finish_body()
        elif self.lost:
            self._cut(self._lost_reason)

    def pause(self) -> None:
        if not self.paused and not self.lost:
            self.paused = True
            self.transport.pauseProducing()  # type: ignore[union-attr]

    def resume(self) -> None:
        if self.paused and not self.lost:
            self.paused = False
            self.transport.resumeProducing()  # type: ignore[union-attr]

    def abort(self) -> None:
        """Stop this exchange and drop the connection: it is never reused."""
        if self.aborted:
            return
        self.aborted = True
        if self.transport is not None and not self.lost:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def close(self) -> None:
        self.aborted = True
        if self.transport is not None and not self.lost:
            self.transport.loseConnection()

    # -- from the transport ------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self.aborted:
            return
        if self.exchange is None or self.complete:
            self.abort()  # bytes nobody asked for: this connection cannot be trusted
            return
        self.answered = True
        try:
            self.parser.feed_data(data)
        except Exception as e:  # not HTTP (httptools' errors), or a second response
            self._bad(e)
            return
        if self.body is not None and self.pending and not self.aborted:
            self._flush()
        if self.complete and self.body is not None and not self.aborted:
            self._finish_body()

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
        self.lost = True
        self._lost_reason = reason
        exchange = self.exchange
        self._drop_from_pool()
        if exchange is None or self.complete and self.body is None:
            return  # idle, or complete and waiting for its body protocol
        if self.response is not None and self._until_eof and not self.aborted:
            self.complete = True  # no length, not chunked: the close ends the body
            if self.body is not None:
                self._flush()
                self._finish_body()
            return
        if self.response is None:
            self.exchange = None
            if not exchange.cancelled:
                if self.answered:
                    exchange.d.errback(Failure(ResponseFailed([reason])))
                else:
                    exchange.lost_unanswered(reason, self.reused)
            return
        if self.body is not None and not self.complete:
            self._flush()
            self._cut(reason)

    # -- llhttp's callbacks --------------------------------------------------

    def on_status(self, status: bytes) -> None:
        self._phrase += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw.append((name, value))

    def on_headers_complete(self) -> None:
        if self.response is not None:
            raise ValueError("a second response to one request")
        parser = self.parser
        length: Any = UNKNOWN_LENGTH
        chunked = False
        for name, value in self._raw:
            lower = name.lower()
            if lower == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    pass
            elif lower == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
        code = parser.get_status_code()
        self._until_eof = (length is UNKNOWN_LENGTH and not chunked
                           and code >= 200 and code not in (204, 304))
        major, _, minor = parser.get_http_version().partition(".")
        response = self.response = LeanResponse(
            self, code, self._phrase, (b"HTTP", int(major), int(minor or 0)),
            self._raw, length)
        self._phrase = b""
        exchange = self.exchange
        assert exchange is not None
        if not exchange.cancelled:
            exchange.d.callback(response)
        if self.body is None and not self.aborted:
            self.pause()  # held until someone takes the body: bytes stay in the kernel

    def on_body(self, body: bytes) -> None:
        self.pending.append(body)

    def on_message_complete(self) -> None:
        self.complete = True
        self._keep = self.parser.should_keep_alive()

    # -- internals -------------------------------------------------------------

    _body_transport: _BodyTransport | None = None  # the delivered body's, while it lasts
    _keep = False  # the response lets the connection be reused
    _until_eof = False  # the body ends when the connection closes
    _lost_reason: Failure
    _origin: _Origin | None = None  # the pool it was put back in

    def _flush(self) -> None:
        pending = self.pending
        if not pending or self.body is None:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        self.pending = []
        self.body.dataReceived(data)

    def _finish_body(self) -> None:
        """The response is complete: end its body, then pool or close the connection."""
        body, exchange = self.body, self.exchange
        self.body = self.exchange = self.response = None
        self._detach()
        keep = self._keep and not self.aborted and not self.lost
        if exchange is not None and keep and self.usable():
            if self.paused:
                self.resume()
            exchange.conn = None
            self._origin = exchange.origin
            exchange.agent._put(exchange.origin, self)
        else:
            self.close()
        body.connectionLost(_DONE)

    def _detach(self) -> None:
        """The response is over: its body protocol can no longer touch this connection."""
        if self._body_transport is not None:
            self._body_transport.conn = None
            self._body_transport = None

    def _cut(self, reason: Failure) -> None:
        body = self.body
        self.body = self.exchange = None
        self._detach()
        if body is not None:
            body.connectionLost(Failure(ResponseFailed([reason])))

    def _bad(self, error: Exception) -> None:
        """The shard's bytes are not HTTP: fail the exchange and drop the connection."""
        exchange = self.exchange
        reason = Failure(error)
        self.abort()
        if self.complete:
            return  # what follows a complete response: the connection is just not reused
        if self.response is None:
            self.exchange = None
            if exchange is not None and not exchange.cancelled:
                exchange.d.errback(Failure(ResponseFailed([reason])))
        elif self.body is not None:
            self._flush()
            self._cut(reason)
        else:
            self.lost = True
            self._lost_reason = reason

    def _drop_from_pool(self) -> None:
        """An idle pooled connection the shard closed."""
        origin = self._origin
        if origin is not None and self in origin.idle:
            origin.idle.remove(self)


_FACTORY = Factory.forProtocol(_Connection)
_FACTORY.noisy = False  # a log line per shard connection is noise at gateway rates
