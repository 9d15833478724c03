"""Request ids and W3C trace context (https://www.w3.org/TR/trace-context/).

Sans-IO. A client's ``X-Request-ID`` is kept when it is well formed and
replaced otherwise, so that one id follows a request through the gateway,
every shard request made for it and their log lines. A client's
``traceparent`` is continued: every shard request gets the same trace id and
a parent id of its own (the gateway's span for that call); without a valid
one the gateway starts a trace. ``tracestate`` is the client's to keep and
passes through unchanged.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

MAX_REQUEST_ID = 128
_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:/+=@-]{1,128}\Z")  # no spaces, quotes or controls
# version-traceid-parentid-flags; a later version may append fields after a dash
_TRACEPARENT = re.compile(rb"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?\Z")
_ZERO_TRACE, _ZERO_SPAN = b"0" * 32, b"0" * 16


def request_id(given: bytes | None) -> bytes:
    """The client's id if it is well formed (at most 128 characters of
    ``[A-Za-z0-9._:/+=@-]``), else a new random one (32 hex digits)."""
    if given is not None and _REQUEST_ID.match(given):
        return given
    return os.urandom(16).hex().encode()


def _span_id() -> bytes:
    while True:
        span = os.urandom(8).hex().encode()
        if span != _ZERO_SPAN:
            return span


@dataclass(frozen=True)
class TraceContext:
    trace_id: bytes  # 32 lower-case hex digits, not all zero
    flags: bytes  # 2 hex digits; 01: sampled
    continued: bool  # from the client's traceparent (else started here)

    def child(self) -> bytes:
        """A ``traceparent`` for one shard request: this trace, a new parent id."""
        return b"00-" + self.trace_id + b"-" + _span_id() + b"-" + self.flags


def sibling(traceparent: bytes) -> bytes:
    """The same ``traceparent`` with a new parent id: one more attempt of a
    shard request (a retry on another replica) is a span of its own."""
    head, sep, flags = traceparent.rpartition(b"-")
    trace = head.rpartition(b"-")[0]
    if not sep or not trace:
        return traceparent
    return trace + b"-" + _span_id() + b"-" + flags


def trace_context(given: bytes | None) -> TraceContext:
    """Continue the client's ``traceparent`` if it is valid, else start a
    trace (sampled, so that the shards' parent-based samplers record it)."""
    if given is not None:
        m = _TRACEPARENT.match(given.strip())
        if m is not None:
            version, trace, parent, flags, rest = m.groups()
            if (version != b"ff" and trace != _ZERO_TRACE and parent != _ZERO_SPAN
                    and not (version == b"00" and rest)):
                return TraceContext(trace, flags, True)
    while True:
        trace = os.urandom(16).hex().encode()
        if trace != _ZERO_TRACE:
            return TraceContext(trace, b"01", False)
