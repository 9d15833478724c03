"""Gateway-made answers on a twisted.web request: a JSON body, then the end."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from ..core.errors import ClientError, TryLater, Unauthorized, error_body
from ..core.routing import MethodNotAllowed


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
    send_json(request, error.status, error.body())
