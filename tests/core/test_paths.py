"""Path templates and dotted paths, parsed once when the config is loaded."""

from __future__ import annotations

import pytest

from shardstream.core.paths import DottedPath, PathTemplate


def test_a_template_matches_whole_segments_and_extracts_raw_parameters():
    t = PathTemplate.parse("/v3/vendors/{vendor_id}/events/{event_id}")
    assert t.params == ("vendor_id", "event_id")
    assert t.match("/v3/vendors/v%32/events/eu~i7") == {"vendor_id": "v%32", "event_id": "eu~i7"}
    for path in ("/v3/vendors/v1/events", "/v3/vendors//events/1", "/v3/vendors/a/b/events/1",
                 "/v3/vendors/v1/events/1/"):
        assert t.match(path) is None
    literal = PathTemplate.parse("/a.b/c")
    assert literal.match("/aXb/c") is None and literal.match("/a.b/c\n") is None
    assert literal.params == () and literal.match("/a.b/c") == {}


def test_replacing_a_segment_keeps_the_rest_of_the_target_as_sent():
    t = PathTemplate.parse("/v3/events/{event_id}")
    assert t.replace(b"/v3/events/eu~i7?x=%20&y", "event_id", 7) == b"/v3/events/7?x=%20&y"
    assert t.replace(b"/v3/events/eu~bLi4", "event_id", "a/b c") == b"/v3/events/a%2Fb%20c"
    assert t.replace(b"/v3/events/eu~r..", "event_id", "..") == b"/v3/events/%2E%2E"


@pytest.mark.parametrize("text,problem", [
    ("v3/events", "must start with '/'"),
    ("/v3/x{id}", "whole segment"),
    ("/v3/{id}/{id}", "appears twice"),
    ("/v3/{1id}", "whole segment"),
])
def test_a_bad_template_says_why(text, problem):
    with pytest.raises(ValueError, match=problem):
        PathTemplate.parse(text)


def test_a_dotted_path_finds_nested_values_or_none():
    p = DottedPath.parse("price.amount")
    assert p.parts == ("price", "amount") and str(p) == "price.amount"
    assert p.lookup({"price": {"amount": 3}}) == 3
    assert p.lookup({"price": 3}) is None and p.lookup([1]) is None and p.lookup({}) is None
    for bad in ("", "a..b", ".a", "a."):
        with pytest.raises(ValueError, match="dotted path"):
            DottedPath.parse(bad)
