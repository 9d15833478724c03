"""Global ids: a shard's local id and the shard's name in one URL-safe string."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardstream.core import ids
from shardstream.core.paths import DottedPath


local_ids = st.integers() | st.text(min_size=1, max_size=20)


@given(st.sampled_from(["eu", "us-east", "s_1", "A9"]), local_ids)
def test_global_ids_round_trip_and_are_url_safe(shard, local):
    gid = ids.encode(shard, local)
    assert re.fullmatch(r"[A-Za-z0-9._~-]+", gid)
    assert ids.decode(gid) == (shard, local)


@given(local_ids, local_ids)
def test_global_ids_never_collide(a, b):
    assert ids.encode("s1", a) != ids.encode("s2", a)
    if a != b or type(a) is not type(b):
        assert ids.encode("s1", a) != ids.encode("s1", b)


@pytest.mark.parametrize("bad", ["", "eu", "eu~", "eu~x1", "eu~i1.5", "eu~r a", "~i1", "eu~b%%", 42])
def test_malformed_global_ids(bad):
    with pytest.raises(ids.BadGlobalId):
        ids.decode(bad)


def test_globalize_and_localize_nested_paths():
    item = {"id": 7, "vendor": {"id": "v1"}, "sessions": [{"id": 1}, {"id": 2}], "n": None}
    ids.globalize(item, [DottedPath.parse(p) for p in ["id", "vendor.id", "sessions.id", "missing.id"]],
                  "eu")
    assert item == {"id": "eu~i7", "vendor": {"id": "eu~rv1"},
                    "sessions": [{"id": "eu~i1"}, {"id": "eu~i2"}], "n": None}
    assert ids.localize(item, [DottedPath.parse(p) for p in ["id", "sessions.id"]]) == {"eu"}
    assert item["id"] == 7 and item["sessions"] == [{"id": 1}, {"id": 2}]
