"""List parameters, what each shard is asked, and signed cursors."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
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
    q2 = paging.parse(ROUTE, args(cursor=cursor), SECRET, shards=["s1", "s2"])
    assert (q2.sort, q2.limit, q2.offset) == ("-k", 10, 0)
    # the cursor carries the filters of its list
    assert paging.shard_query(ROUTE, q2, "s1") == b"city=Lisbon&x=%20y&sort=-k&limit=10&offset=7"
    assert paging.shard_query(ROUTE, q2, "s2") == b"city=Lisbon&x=%20y&sort=-k&limit=10"
    same = paging.parse(ROUTE, args(cursor=cursor), SECRET,
                        b"city=Lisbon&x=%20y&cursor=" + cursor.encode(), shards=["s1", "s2"])
    assert same.filters == q2.filters
    with pytest.raises(paging.BadListQuery):
        paging.parse(ROUTE, args(cursor=cursor), SECRET, b"city=Porto&cursor=" + cursor.encode(),
                     shards=["s1", "s2"])


def test_cursor_rules():
    q = paging.parse(ROUTE, args(sort="k", limit=3), SECRET)
    cursor = paging.encode_cursor(ROUTE, q, {"s1": 1}, SECRET)
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", cursor)  # URL-safe as is
    shards = ["s1"]
    assert paging.parse(ROUTE, args(cursor=cursor, limit=5), SECRET, shards=shards).limit == 5
    assert paging.parse(ROUTE, args(cursor=cursor, sort="k"), SECRET, shards=shards).sort == "k"
    with pytest.raises(paging.BadListQuery):
        paging.parse(ROUTE, args(cursor=cursor, sort="-k"), SECRET, shards=shards)
    with pytest.raises(paging.BadListQuery):
        paging.parse(ROUTE, args(cursor=cursor, offset=1), SECRET, shards=shards)
    other = scatter_route("/v3/other", items="item")
    with pytest.raises(paging.BadCursor) as e:
        paging.parse(other, args(cursor=cursor), SECRET, shards=shards)
    assert e.value.status == 400 and "belongs to another route" in e.value.message
    with pytest.raises(paging.BadCursor):
        paging.parse(ROUTE, args(cursor=cursor), b"another secret, same length....",
                     shards=shards)


@given(st.binary(max_size=60), st.integers(min_value=0, max_value=200))
def test_tampered_or_random_cursors_are_400_never_500(noise, where):
    q = paging.parse(ROUTE, args(sort="k", limit=3), SECRET)
    cursor = paging.encode_cursor(ROUTE, q, {"s1": 1}, SECRET)
    for candidate in (noise.decode("latin-1"), cursor[:where] + "A" + cursor[where + 1:],
                      cursor + noise.hex()):
        if candidate == cursor:
            continue
        with pytest.raises(paging.BadCursor):
            paging.decode_cursor(candidate, ROUTE, SECRET, shards=["s1"])


# -- cursors across shard set changes ---------------------------------------------------

def hash16(name: str) -> bytes:
    return hashlib.blake2b(name.encode(), digest_size=2).digest()


def collider(name: str) -> str:
    """Another shard name with the same 16-bit hash (found by brute force)."""
    target = hash16(name)
    return next(f"x{i}" for i in itertools.count() if hash16(f"x{i}") == target)


S2_TWIN = collider("s2")


def a_cursor(positions, route=ROUTE):
    q = paging.parse(route, args(sort="k", limit=3), SECRET)
    return paging.encode_cursor(route, q, positions, SECRET)


def payload(cursor: str) -> bytes:
    body = cursor.partition(".")[0]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


def signed(data: bytes) -> str:
    mac = hmac.new(SECRET, data, hashlib.sha256).digest()[:12]
    return ".".join(base64.urlsafe_b64encode(x).rstrip(b"=").decode() for x in (data, mac))


def test_a_cursor_naming_a_removed_shard_is_410_shard_gone():
    cursor = a_cursor({"s1": 3, "s2": 4})
    with pytest.raises(paging.ShardGone) as e:
        paging.parse(ROUTE, args(cursor=cursor), SECRET, shards=["s1", "s3"])
    assert e.value.status == 410 and e.value.code == "cursor_shard_gone"
    assert "start the list again" in e.value.message
    assert isinstance(e.value, paging.ClientError)


def test_a_shard_added_since_the_cursor_starts_from_its_beginning():
    cursor = a_cursor({"s1": 3, "s2": 4})
    q = paging.parse(ROUTE, args(cursor=cursor), SECRET, shards=["s3", "s2", "s1"])
    assert q.positions == {"s1": 3, "s2": 4}
    assert q.start("s3") == 0
    assert paging.shard_query(ROUTE, q, "s3") == b"sort=k&limit=3"
    assert paging.shard_query(ROUTE, q, "s2") == b"sort=k&limit=3&offset=4"


def test_a_removed_shard_replaced_by_one_with_the_same_16_bit_hash_is_gone():
    cursor = a_cursor({"s1": 3, "s2": 4})
    with pytest.raises(paging.ShardGone):  # the shardset fingerprint tells s2 from its twin
        paging.decode_cursor(cursor, ROUTE, SECRET, shards=["s1", S2_TWIN])


def test_current_shards_sharing_a_16_bit_hash_are_told_apart():
    shards = ["s1", "s2", S2_TWIN]
    for named in ("s2", S2_TWIN):
        cursor = a_cursor({"s1": 3, named: 4})
        assert paging.decode_cursor(cursor, ROUTE, SECRET, shards=shards)["p"] == {"s1": 3, named: 4}


def test_shards_colliding_on_16_bits_make_a_cursor_with_32_bit_hashes():
    both = a_cursor({"s1": 3, "s2": 4, S2_TWIN: 5})
    one = a_cursor({"s1": 3, "s2": 4, "s3": 5})
    assert payload(both)[1] & 3 == 1 and payload(one)[1] & 3 == 0  # flags: hash width
    assert len(payload(both)) == len(payload(one)) + 3 * 2
    state = paging.decode_cursor(both, ROUTE, SECRET, shards=["s1", S2_TWIN, "s2"])
    assert state["p"] == {"s1": 3, "s2": 4, S2_TWIN: 5}
    with pytest.raises(paging.ShardGone):
        paging.decode_cursor(both, ROUTE, SECRET, shards=["s1", "s2"])


def test_an_altered_cursor_is_400_whatever_byte_changed():
    cursor = a_cursor({"s1": 3, "s2": 4})
    data = payload(cursor)
    for i in range(len(data)):
        altered = data[:i] + bytes([data[i] ^ 1]) + data[i + 1:]
        forged = paging._b64(altered) + "." + cursor.partition(".")[2]
        with pytest.raises(paging.BadCursor) as e:
            paging.decode_cursor(forged, ROUTE, SECRET, shards=["s1", "s2"])
        assert e.value.status == 400 and e.value.code == "invalid_cursor"


def test_a_signed_cursor_of_another_version_is_400():
    data = payload(a_cursor({"s1": 3}))
    with pytest.raises(paging.BadCursor) as e:
        paging.decode_cursor(signed(b"\x01" + data[1:]), ROUTE, SECRET, shards=["s1"])
    assert "another version" in e.value.message


@given(st.binary(max_size=80))
def test_signed_nonsense_is_400_or_410_never_500(data):
    try:
        paging.decode_cursor(signed(b"\x02" + data), ROUTE, SECRET, shards=["s1", "s2"])
    except (paging.BadCursor, paging.ShardGone):
        pass


def test_reading_a_cursor_needs_the_current_shards():
    cursor = a_cursor({"s1": 3})
    with pytest.raises(ValueError, match="current shard names"):
        paging.decode_cursor(cursor, ROUTE, SECRET)
    with pytest.raises(ValueError, match="current shard names"):
        paging.parse(ROUTE, args(cursor=cursor), SECRET)
    assert paging.parse(ROUTE, args(limit=3), SECRET).positions is None  # no cursor: not needed
