"""Error values and the JSON error body every gateway-made response uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True)
class ShardError:
    """Why one shard's part of a request failed, as reported in meta."""

    code: str  # connect_refused, connect_timeout, first_byte_timeout, idle_timeout,
    #            total_timeout, status, malformed_json, truncated, upstream_error
    message: str
    status: int | None = None

    @property
    def is_timeout(self) -> bool:
        return self.code.endswith("timeout")


def error_body(code: str, message: str, **extra: Any) -> bytes:
    """``{"error": {"code", "message", ...}}`` as bytes."""
    return orjson.dumps({"error": {"code": code, "message": message, **extra}})


def respond_error(request: Any, status: int, code: str, message: str, **extra: Any) -> None:
    """Answer a twisted.web request with a JSON error and finish it."""
    body = error_body(code, message, **extra)
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()
