"""List parameters, what each shard is asked, and signed cursors."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardstream.core import config, paging


def scatter_route(path: str, **options: object) -> config.Route:
    """A scatter route as the config loader builds it."""
    data = {"shards": {"s1": {"urls": ["http://127.0.0.1:1"]}},
            "routes": [{"path": path, "mode": "scatter", **options}]}
    return config.parse(data, "<test>").routes[0]


ROUTE = scatter_route("/v3/events", items="data.item", sort=["k", "p.q"], max_limit=50,
                      total="meta.total", id_fields=["id"])
SECRET = b"s" * 32


def args(**kw):
    return {k.encode(): [str(v).encode()] for k, v in kw.items()}


@pytest.mark.parametrize("kw,message", [
    ({"sort": "nope"}, "cannot sort by"),
    ({"limit": "\u00b2"}, "limit must be"),
    ({"offset": "9" * 5000}, "offset must be"),
    ({"sort": "--k"}, "cannot sort by"),
    ({"limit": "51"}, "above this route's maximum of 50"),
    ({"limit": "0"}, "limit must be"),
    ({"limit": "x"}, "limit must be"),
    ({"offset": "-1"}, "offset must be"),
])
def test_bad_list_parameters_are_400(kw, message):
    with pytest.raises(paging.BadListQuery) as e:
        paging.parse(ROUTE, args(**kw), SECRET)
    assert e.value.status == 400 and message in e.value.message


def test_repeated_parameter_is_400():
    with pytest.raises(paging.BadListQuery):
        paging.parse(ROUTE, {b"limit": [b"1", b"2"]}, SECRET)


def test_default_limit_is_the_maximum():
    assert paging.parse(ROUTE, {}, SECRET).limit == 50


def test_default_sort_applies_when_the_client_gives_none():
    import dataclasses

    route = dataclasses.replace(ROUTE, scatter=dataclasses.replace(ROUTE.scatter, default_sort="-k"))
    assert paging.parse(route, {}, SECRET).sort == "-k"
    assert paging.parse(route, args(sort="p.q"), SECRET).sort == "p.q"


def test_shard_query_keeps_client_params_and_pushes_down_limit():
    raw = b"city=Lisbon&limit=10&%6Fffset=5&sort=-k&x=%20y"
    q = paging.parse(ROUTE, args(sort="-k", limit=10, offset=5), SECRET, raw)
    assert paging.shard_query(ROUTE, q, "s1") == b"city=Lisbon&x=%20y&sort=-k&limit=15"
    cursor = paging.encode_cursor(ROUTE, q, {"s1": 7, "s2": 0}, SECRET)
    q2 = paging.parse(ROUTE, args(cursor=cursor), SECRET)
    assert (q2.sort, q2.limit, q2.offset) == ("-k", 10, 0)
    # the cursor carries the filters of its list
    assert paging.shard_query(ROUTE, q2, "s1") == b"city=Lisbon&x=%20y&sort=-k&limit=10&offset=7"
    assert paging.shard_query(ROUTE, q2, "s2") == b"city=Lisbon&x=%20y&sort=-k&limit=10"
    same = paging.parse(ROUTE, args(cursor=cursor), SECRET, b"city=Lisbon&x=%20y&cursor=" + cursor.encode())
    assert same.filters == q2.filters
    with pytest.raises(paging.BadListQuery):
        paging.parse(ROUTE, args(cursor=cursor), SECRET, b"city=Porto&cursor=" + cursor.encode())


def test_cursor_rules():
    q = paging.parse(ROUTE, args(sort="k", limit=3), SECRET)
    cursor = paging.encode_cursor(ROUTE, q, {"s1": 1}, SECRET)
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", cursor)  # URL-safe as is
    assert paging.parse(ROUTE, args(cursor=cursor, limit=5), SECRET).limit == 5
    assert paging.parse(ROUTE, args(cursor=cursor, sort="k"), SECRET).sort == "k"
    with pytest.raises(paging.BadListQuery):
        paging.parse(ROUTE, args(cursor=cursor, sort="-k"), SECRET)
    with pytest.raises(paging.BadListQuery):
        paging.parse(ROUTE, args(cursor=cursor, offset=1), SECRET)
    other = scatter_route("/v3/other", items="item")
    with pytest.raises(paging.BadCursor):
        paging.parse(other, args(cursor=cursor), SECRET)
    with pytest.raises(paging.BadCursor):
        paging.parse(ROUTE, args(cursor=cursor), b"another secret, same length....")


@given(st.binary(max_size=60), st.integers(min_value=0, max_value=200))
def test_tampered_or_random_cursors_are_400_never_500(noise, where):
    q = paging.parse(ROUTE, args(sort="k", limit=3), SECRET)
    cursor = paging.encode_cursor(ROUTE, q, {"s1": 1}, SECRET)
    for candidate in (noise.decode("latin-1"), cursor[:where] + "A" + cursor[where + 1:],
                      cursor + noise.hex()):
        if candidate == cursor:
            continue
        with pytest.raises(paging.BadCursor):
            paging.decode_cursor(candidate, ROUTE, SECRET)
