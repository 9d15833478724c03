"""Gateway-made answers on a twisted.web request: a JSON body, then the end."""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.interfaces import ITCPTransport
from twisted.web.server import Request

from ..core.errors import ClientError, TryLater, Unauthorized, error_body
from ..core.routing import MethodNotAllowed
from ..observe.metrics import metrics
from . import record as record_mod

# A cut response's last bytes get this long to reach a slow client.
CUT_FLUSH_SECONDS = 5.0


def send_json(request: Request, status: int, body: bytes) -> None:
    """Answer with a complete JSON body and finish the request."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"content-length", b"%d" % len(body))
    request_id = getattr(request, "request_id", None)
    if request_id:  # headers may have been reset for this answer: say it again
        request.setHeader(b"x-request-id", request_id)
    for name, value in getattr(request, "ratelimit", ()):  # an authenticated partner's
        request.setHeader(name, value)
    request.write(body)
    request.finish()


def respond_error(request: Request, status: int, code: str, message: str, **extra: Any) -> None:
    """``{"error": {"code", "message", ...}}`` with ``status``."""
    send_json(request, status, error_body(code, message, **extra))


def refuse(request: Request, error: ClientError) -> None:
    """Answer a request the gateway refuses (a 4xx of the core)."""
    if isinstance(error, MethodNotAllowed):
        request.setHeader(b"allow", ", ".join(error.extra["allow"]).encode())
    if isinstance(error, Unauthorized):
        request.setHeader(b"www-authenticate", error.challenge.encode())
    if isinstance(error, TryLater):
        request.setHeader(b"retry-after", str(error.retry_after).encode())
        if error.code == "tenant_moving":
            metrics().moving_writes.labels(error.kind or "").inc()
    send_json(request, error.status, error.body())


def cut_response(request: Request, reactor: Any) -> None:
    """End a response that began and cannot be completed: the connection
    closes without the body's end (no last chunk, no closing bracket), so no
    client mistakes it for a complete one. What was written is flushed first:
    an abort would drop the bytes still in the transport's buffer, status
    line included. A client that does not read them is reset after
    CUT_FLUSH_SECONDS."""
    record_mod.cut(request)
    # Typed an optional ITransport: a connected client's is TCP (or TLS over TCP).
    transport = cast(ITCPTransport, request.channel.transport)
    transport.loseConnection()
    timer = reactor.callLater(CUT_FLUSH_SECONDS, transport.abortConnection)
    request.notifyFinish().addBoth(lambda _: timer.cancel() if timer.active() else None)
