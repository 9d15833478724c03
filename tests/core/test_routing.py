"""Routes matched to requests, and the shard that owns a request."""

from __future__ import annotations


import tomllib

import pytest

from configs import GOOD, write

from shardstream.core import config
from shardstream.core.routing import MethodNotAllowed, NotFound, Router, UnknownShardKey


def test_router_matches_routes_and_owners(tmp_path):
    router = Router(config.load(write(tmp_path, GOOD)))
    m = router.match("GET", "/v3/vendors/v%32%300/events")
    assert (m.route.mode, dict(m.params)) == ("route", {"vendor_id": "v200"})
    assert router.owner(m, b"/v3/vendors/v%32%300/events?x=1") == (
        "s2", b"/v3/vendors/v%32%300/events?x=1")
    assert router.match("GET", "/v3/events").route.mode == "scatter"
    with pytest.raises(MethodNotAllowed) as e:
        router.match("DELETE", "/v3/events")
    assert e.value.extra["allow"] == ["GET"]
    for path in ("/v3/events/", "/v3", "/v3/vendors//events", "/v3/vendors/a/b/events"):
        with pytest.raises(NotFound):
            router.match("GET", path)
    with pytest.raises(UnknownShardKey):
        router.owner(router.match("POST", "/v3/vendors/v999/events"), b"/")


def test_a_trailing_newline_is_never_part_of_a_valid_token():
    """``$`` matches before a final newline; ids, paths, limits and names must not."""
    from shardstream.core import config, ids, paging
    from shardstream.core.routing import NotFound, Router

    assert ids.encode("eu", "0\n") != "eu~r0\n" and ids.decode(ids.encode("eu", "0\n")) == ("eu", "0\n")
    for bad in ("eu~i5\n", "eu~rab\n", "eu~bYWI\n"):
        with pytest.raises(ids.BadGlobalId):
            ids.decode(bad)
    with pytest.raises(paging.BadListQuery):
        paging._count("5\n", "limit", 1)
    with pytest.raises(config.ConfigError):
        config.parse({"shards": {"a\n": {"urls": ["http://127.0.0.1:1"]}},
                      "routes": [{"path": "/x", "mode": "scatter", "items": "item"}]})
    router = Router(config.parse({"shards": {"a": {"urls": ["http://127.0.0.1:1"]}},
                                  "routes": [{"path": "/x", "mode": "scatter", "items": "item"}]}))
    with pytest.raises(NotFound):
        router.match("GET", "/x\n")


@pytest.mark.parametrize("path", [
    b"/v3/events/..", b"/v3/events/.", b"/v3/./events", b"/v3/%2e%2E/admin", b"/v3/%2E/events",
    b"//v3/events", b"/v3//events", b"/v3/vendors/v1%2F..%2Fx/events",
    b"/v3/vendors/v1%5cx/events", b"/v3/vendors/v1\\x/events", b"v3/events"])
def test_paths_that_mean_another_path_are_refused_not_normalised(path):
    from shardstream.core.routing import BadPath, path_problem

    assert path_problem(path) is not None
    router = Router(config.parse(tomllib.loads(GOOD), "<t>"))
    with pytest.raises(BadPath):
        router.match_request(b"GET", path + b"?x=1")


@pytest.mark.parametrize("path", [b"/v3/events", b"/v3/events/", b"/v3/vendors/v.1/events",
                                  b"/v3/vendors/%2E%2E%2E/events", b"/v3/vendors/a%20b/events"])
def test_ordinary_paths_pass(path):
    from shardstream.core.routing import path_problem

    assert path_problem(path) is None
