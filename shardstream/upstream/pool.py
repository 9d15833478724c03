"""The shards' connection pool and endpoints, as Twisted's, with two changes.

Twisted's pool resends a request that met a pooled connection the shard had
just closed; only reads are resent here (:func:`~shardstream.core.retry.may_resend`),
and a closing connection is never pooled, so a write reaches a shard at most
once. Endpoints are built once per shard origin.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.web import _newclient
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    _HTTP11ClientFactory,
    _RetryingHTTP11ClientProtocol,
)
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from ..core.retry import may_resend


def keep_connection_tokens() -> bool:
    """Let a relayed response drop the fields its ``Connection`` names.

    Twisted's client parser moves ``Connection`` out of the response's
    headers (into its own ``connHeaders``), so whoever relays the response
    cannot see which fields the shard declared hop-by-hop, and forwards
    them. Once installed (process-wide, when a service starts), the
    ``Connection`` values stay in the response's headers too; the relay
    drops that field and every field it names. False if Twisted's parser
    is not the one this was written against; then nothing changes.
    """
    parser: Any = getattr(_newclient, "HTTPClientParser", None)
    original = getattr(parser, "allHeadersReceived", None)
    if not callable(original):
        return False
    if getattr(original, "keeps_connection_tokens", False):
        return True

    def allHeadersReceived(self: Any) -> None:
        for value in self.connHeaders.getRawHeaders(b"connection", ()):
            self.headers.addRawHeader(b"connection", value)
        original(self)

    allHeadersReceived.keeps_connection_tokens = True  # type: ignore[attr-defined]
    parser.allHeadersReceived = allHeadersReceived
    return True


class QuietFactory(_HTTP11ClientFactory):
    noisy = False  # one log line per pooled connection is noise at gateway rates


class _ReadsRetry(_RetryingHTTP11ClientProtocol):
    """Twisted resends a request that met a pooled connection the shard had
    just closed, for every method HTTP calls idempotent. DELETE is one, but
    the gateway promises never to send a write twice: only reads are resent."""

    def _shouldRetry(self, method: bytes, exception: Exception, body: Any) -> bool:
        return may_resend(method) and super()._shouldRetry(method, exception, body)


class Pool(HTTPConnectionPool):
    """Twisted's pool, changed so that a write reaches a shard at most once.

    A response dropped at its headers closes its connection; when the rest of
    it was already buffered, Twisted's parser still completes it and would
    pool the closing connection, and the next request would be written to it
    and lost (then resent, or reported failed although the shard did it).
    Such a connection is not pooled. And only reads are resent automatically.
    """

    retryAutomatically = False  # getConnection below wraps what it takes from the pool

    def getConnection(self, key: Any, endpoint: Any) -> Deferred:
        connections = self._connections.get(key)
        while connections:
            connection = connections.pop(0)
            self._timeouts.pop(connection).cancel()
            if connection.state == "QUIESCENT":
                return succeed(_ReadsRetry(connection,
                                           lambda: self._newConnection(key, endpoint)))
        return self._newConnection(key, endpoint)

    def _putConnection(self, key: Any, connection: Any) -> None:
        if _closing(connection.transport):
            return  # it goes nowhere
        super()._putConnection(key, connection)


def _closing(transport: Any) -> bool:
    """Is this transport, or one it runs over (TLS over TCP), closing?"""
    for _ in range(4):
        if transport is None:
            return True
        if transport.__dict__.get("disconnecting") or transport.__dict__.get("_aborting"):
            return True
        transport = transport.__dict__.get("transport")
        if transport is None:
            return False
    return False


@implementer(IAgentEndpointFactory)
class Endpoints:
    """One endpoint per shard origin, remembered: building one costs a host
    name check (idna) on every request. A shard given by IP address gets a
    plain TCP endpoint: HostnameEndpoint would resolve the literal in a
    thread for every new connection, and that thread's GIL hand-offs stall
    the reactor while a failing shard keeps reconnecting."""

    def __init__(self, reactor: Any, connect_timeout: float, tls: Any = None) -> None:
        self._reactor = reactor
        self._timeout = connect_timeout
        self._tls = tls if tls is not None else BrowserLikePolicyForHTTPS()
        self._default = Agent(reactor, connectTimeout=connect_timeout,
                              contextFactory=self._tls)._endpointFactory
        self._cache: dict[tuple[bytes, bytes, int], Any] = {}

    def endpointForURI(self, uri: Any) -> Any:
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._cache.get(key)
        if endpoint is None:
            endpoint = self._cache[key] = self._make(uri)
        return endpoint

    def _make(self, uri: Any) -> Any:
        host = uri.host.decode("ascii")
        endpoint: IStreamClientEndpoint
        if isIPAddress(host):
            endpoint = TCP4ClientEndpoint(self._reactor, host, uri.port, timeout=self._timeout)
        elif isIPv6Address(host):
            endpoint = TCP6ClientEndpoint(self._reactor, host, uri.port, timeout=self._timeout)
        else:
            return self._default.endpointForURI(uri)
        if uri.scheme == b"https":
            endpoint = wrapClientTLS(self._tls.creatorForNetloc(uri.host, uri.port), endpoint)
        return endpoint
