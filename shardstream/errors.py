"""Error values and the JSON error body every gateway-made response uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True)
class ShardError:
    """Why one shard's part of a request failed, as reported in meta."""

    code: str  # connect_refused, connect_timeout, first_byte_timeout, idle_timeout,
    #            total_timeout, status, malformed_json, truncated, no_healthy_replica, ...
    message: str
    status: int | None = None
    attempts: int = 1  # replicas tried

    @property
    def is_timeout(self) -> bool:
        return self.code.endswith("timeout")


def failure_answer(errors: list[ShardError], timeout_code: str, failed_code: str,
                   every_shard: bool = True) -> tuple[int, str]:
    """Status and code for a request that failed because shards did.

    Every shard rejected the request with the same 4xx (say 401 for an
    expired token): that is the client's answer, not a gateway fault (only
    when ``every_shard`` answered: one shard's 404 is not the list's). All
    timed out: 504. Otherwise 502.
    """
    statuses = {e.status for e in errors}
    if every_shard and len(statuses) == 1:
        (status,) = statuses
        if status is not None and 400 <= status < 500:
            return status, "shards_rejected"
    if errors and all(e.is_timeout for e in errors):
        return 504, timeout_code
    return 502, failed_code


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
