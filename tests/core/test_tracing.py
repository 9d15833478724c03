"""Request ids and W3C trace context: kept when well formed, made otherwise."""

from __future__ import annotations

import re

import pytest

from shardstream.core.tracing import request_id, trace_context

TRACE = b"0af7651916cd43dd8448eb211c80319c"
GIVEN = b"00-" + TRACE + b"-b7ad6b7169203331-01"


@pytest.mark.parametrize("good", [b"abc-123", b"a" * 128, b"7f3c.9d:x/y+z=@_-"])
def test_a_well_formed_request_id_is_kept(good):
    assert request_id(good) == good


@pytest.mark.parametrize("bad", [None, b"", b"a" * 129, b"has space", b'quo"te', b"new\nline",
                                 "é".encode(), b"tab\t"])
def test_any_other_request_id_is_replaced_by_a_random_one(bad):
    made = request_id(bad)
    assert re.fullmatch(rb"[0-9a-f]{32}", made) and made != request_id(bad)


def test_a_valid_traceparent_is_continued_with_a_new_parent_id_per_child():
    t = trace_context(GIVEN)
    assert (t.trace_id, t.flags, t.continued) == (TRACE, b"01", True)
    a, b = t.child(), t.child()
    for child in (a, b):
        version, trace, parent, flags = child.split(b"-")
        assert (version, trace, flags) == (b"00", TRACE, b"01")
        assert re.fullmatch(rb"[0-9a-f]{16}", parent) and parent != b"b7ad6b7169203331"
    assert a != b
    assert trace_context(b"cc-" + TRACE + b"-b7ad6b7169203331-00-future").trace_id == TRACE


@pytest.mark.parametrize("bad", [
    None, b"", b"garbage", b"ff-" + TRACE + b"-b7ad6b7169203331-01",  # version ff is invalid
    b"00-" + b"0" * 32 + b"-b7ad6b7169203331-01", b"00-" + TRACE + b"-" + b"0" * 16 + b"-01",
    b"00-" + TRACE.upper() + b"-b7ad6b7169203331-01", b"00-" + TRACE + b"-b7ad6b7169203331-01-x",
])
def test_an_invalid_traceparent_starts_a_new_trace(bad):
    t = trace_context(bad)
    assert not t.continued and t.flags == b"01"
    assert re.fullmatch(rb"[0-9a-f]{32}", t.trace_id) and t.trace_id not in (TRACE, b"0" * 32)
