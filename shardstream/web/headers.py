"""Which headers cross the gateway, in each direction.

Hop-by-hop headers (RFC 9110 section 7.6.1) belong to one connection and are
never forwarded; neither are the headers the gateway must set itself.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Iterable, Sequence

from twisted.web.http_headers import Headers

from ..core.config import AuthConfig

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Set by the HTTP client from the URL and the body producer, and by the
# gateway for every shard request (the request id, a traceparent of its own).
_REQUEST_OWN = frozenset({b"host", b"content-length", b"x-request-id", b"traceparent"})
# A scatter request must get a whole JSON list back, whatever the client
# accepts or already has: no content negotiation, no conditional or range
# requests (a 304 or a 206 from one shard has no list to merge).
_SCATTER_OWN = frozenset(
    {
        b"accept",
        b"accept-encoding",
        b"if-match",
        b"if-none-match",
        b"if-modified-since",
        b"if-unmodified-since",
        b"if-range",
        b"range",
    }
)


def _connection_tokens(headers: Headers) -> set[bytes]:
    tokens: set[bytes] = set()
    for value in headers.getRawHeaders(b"connection", ()):
        tokens.update(t.strip().lower() for t in value.split(b","))
    return tokens


def end_to_end(headers: Headers, drop: Iterable[bytes] = ()) -> list[tuple[bytes, Sequence[bytes]]]:
    """The headers that may be forwarded, minus ``drop`` (lower-case names)."""
    skip = HOP_BY_HOP | _connection_tokens(headers) | frozenset(drop)
    return [
        (name, values)
        for name, values in headers.getAllRawHeaders()
        if name.lower() not in skip
    ]


DEFAULT_PARTNER_HEADER = AuthConfig.partner_header
_HOST = re.compile(rb"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(:[0-9]{1,5})?\Z")
# Rebuilt by the gateway from the real peer (kept only from trusted proxies).
_FORWARDING = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host",
                         b"forwarded"})
# With [auth], the partner's credentials stay at the gateway.
_CREDENTIALS = frozenset({b"authorization", b"cookie"})


class _Set(Headers):
    """Headers every value of which went through ``setRawHeaders`` (which
    folds line breaks): a copy can take them as they are, where
    ``Headers.copy`` sets each again (a few percent of a small list
    request's CPU, one copy per shard)."""

    __slots__ = ()

    def copy(self) -> "_Set":
        out = _Set()
        out._rawHeaders = {name: list(values) for name, values in self._rawHeaders.items()}
        return out


def upstream_request_headers(request, scatter: bool) -> Headers:
    """Headers for a shard request made on behalf of a client request."""
    drop = (_REQUEST_OWN | _SCATTER_OWN if scatter else _REQUEST_OWN) | _FORWARDING
    gateway = getattr(request, "gateway", None)
    auth = gateway.config.auth if gateway is not None else None
    # Only the gateway says who the partner is, with [auth] or without.
    partner_header = (auth.partner_header if auth is not None else DEFAULT_PARTNER_HEADER)
    # The client's credentials stay here, with [auth] or without: a shard
    # gets its own ([shards.NAME.credentials]), never a partner's.
    drop = drop | {partner_header.lower().encode()} | _CREDENTIALS
    if auth is not None and auth.header:
        drop = drop | {auth.header.lower().encode()}
    out = _Set()
    for name, values in end_to_end(request.requestHeaders, drop):
        out.setRawHeaders(name, values)
    partner = getattr(request, "partner", None)
    if auth is not None and partner is not None:  # who asks, said by the gateway only
        out.setRawHeaders(auth.partner_header.encode(), [partner.name.encode()])
    if scatter:
        out.setRawHeaders(b"accept", [b"application/json"])
        out.setRawHeaders(b"accept-encoding", [b"identity"])
    _forwarding(request, out, gateway.config.server.trusted_proxies if gateway else ())
    request_id = getattr(request, "request_id", None)
    if request_id:
        out.setRawHeaders(b"x-request-id", [request_id])
    return with_new_span(out, request, copy=False)


def with_new_span(headers: Headers, request: Any, copy: bool = True) -> Headers:
    """The headers for one more shard request of the same client request: the
    same trace id, a parent id of its own (``tracestate`` passes unchanged)."""
    trace = getattr(request, "trace", None)
    if trace is None:
        return headers
    out = headers.copy() if copy else headers
    out.setRawHeaders(b"traceparent", [trace.child()])
    return out


def trusted(peer: str | None, proxies: Sequence[str]) -> bool:
    """Is the peer one of ``server.trusted_proxies`` (whose forwarding fields count)?"""
    if peer is None or not proxies:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(n) for n in proxies)


def _forwarding(request: Any, out: Headers, proxies: Sequence[str]) -> None:
    """X-Forwarded-For/-Proto/-Host and Forwarded (RFC 7239), from the real
    peer; what the request itself says is kept only from a trusted proxy."""
    incoming = request.requestHeaders
    peer = getattr(request.getClientAddress(), "host", None)
    keep = trusted(peer, proxies)
    proto = b"https" if request.isSecure() else b"http"
    if keep:
        proto = (incoming.getRawHeaders(b"x-forwarded-proto", [proto])[-1]).strip() or proto
    host = request.getHeader(b"host")
    if host is not None and not _HOST.match(host):
        host = None  # not a host[:port]: never copied into a field a shard may parse
    if peer:
        prior = incoming.getRawHeaders(b"x-forwarded-for", []) if keep else []
        out.setRawHeaders(b"x-forwarded-for", [b", ".join(prior + [peer.encode()])])
        node = f'"[{peer}]"' if ":" in peer else peer
        element = f"for={node};proto={proto.decode('latin-1')}"
        if host:
            element += f';host="{host.decode("latin-1")}"'
        prior = incoming.getRawHeaders(b"forwarded", []) if keep else []
        out.setRawHeaders(b"forwarded", [b", ".join(prior + [element.encode("latin-1")])])
    out.setRawHeaders(b"x-forwarded-proto", [proto])
    if host:
        out.setRawHeaders(b"x-forwarded-host", [host])
