"""What can go wrong, as values: a client's request the gateway refuses, a
shard's part that failed, and the JSON error body every gateway-made answer
uses. Rendering them on a twisted.web request is the shell's job
(:mod:`shardstream.web.errors`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


class ClientError(Exception):
    """A request the gateway answers itself with a 4xx, before or instead of
    asking a shard. Subclasses set the status and the error code; ``extra``
    goes into the error body (and ``allow`` into a 405's Allow header)."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def body(self) -> bytes:
        return error_body(self.code, self.message, **self.extra)


class Unauthorized(ClientError):
    """No key, or not a key of any partner: 401 with a Bearer challenge."""

    status = 401
    code = "unauthorized"
    challenge = 'Bearer realm="shardstream"'


class Forbidden(ClientError):
    """A partner's key, for a route or method outside its scopes."""

    status = 403
    code = "forbidden"


class TryLater(ClientError):
    """503 with Retry-After: the gateway cannot decide this request now."""

    status = 503
    code = "unavailable"

    def __init__(self, message: str, retry_after: int, code: str | None = None,
                 kind: str | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after
        self.kind = kind  # tenant_moving: the directory kind of the moving key (for metrics)
        if code is not None:
            self.code = code


class RateLimited(TryLater):
    """Over a rate or concurrency limit: 429 with Retry-After (seconds)."""

    status = 429
    code = "rate_limited"


class RateLimitUnavailable(RateLimited):
    """The limits cannot be checked and on_redis_down is closed."""

    status = 503
    code = "rate_limit_unavailable"


class BodyTooLarge(ClientError):
    status = 413
    code = "body_too_large"


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
