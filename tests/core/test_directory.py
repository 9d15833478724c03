"""The directory's core: entries, files, placement by rendezvous hashing."""

from __future__ import annotations

import collections

import pytest

from shardstream.core import config
from shardstream.core.directory import (BadDirectoryFile, BadEntry, Owner, OwnerTable,
                                        parse_file, parse_owner, placement, rendezvous)

SHARDS = {"a", "b", "c"}


def test_an_entry_is_a_shard_or_a_move():
    assert parse_owner("a", SHARDS) == Owner("a")
    assert parse_owner(" a > b ", SHARDS) == Owner("a", "b") and Owner("a", "b").moving
    for bad in ("", ">b", "a>", "a>a", "x", "a>x"):
        with pytest.raises(BadEntry):
            parse_owner(bad, SHARDS)


def test_csv_and_json_lines_files_and_every_bad_line_named():
    table = parse_file(b"key,shard\nv1,a\n# note\n\nv2,a>b\n", "v.csv", SHARDS)
    assert dict(table) == {"v1": Owner("a"), "v2": Owner("a", "b")}
    assert table.moves() == {"v2": Owner("a", "b")}
    table = parse_file(b'{"key": "v1", "shard": "b"}\n{"key": 7, "shard": "c"}\n', "v.jsonl",
                       SHARDS)
    assert dict(table) == {"v1": Owner("b"), "7": Owner("c")}
    with pytest.raises(BadDirectoryFile) as e:
        parse_file(b"v1,a\nv2,zz\nv3\nv4,a,b\n,a\n", "/etc/v.csv", SHARDS)
    message = str(e.value)
    assert "/etc/v.csv: 4 bad line(s)" in message
    for where in ("/etc/v.csv:2: 'zz' names shard 'zz'", "/etc/v.csv:3:", "/etc/v.csv:4:",
                  "/etc/v.csv:5: the key is empty"):
        assert where in message


def test_a_table_shares_its_few_distinct_entries():
    table = OwnerTable((f"v{n}", Owner("a" if n % 2 else "b")) for n in range(1000))
    assert len(table._owners) == 2 and table["v1"] == Owner("a") and table.get("x") is None


def test_rendezvous_is_stable_weighted_and_moves_only_what_a_new_shard_wins():
    keys = [f"k{n}" for n in range(6000)]
    two = {k: rendezvous(k, [("a", 1.0), ("b", 2.0)]) for k in keys}
    counts = collections.Counter(two.values())
    assert 0.28 < counts["a"] / len(keys) < 0.39  # weight 1 of 3
    three = {k: rendezvous(k, [("a", 1.0), ("b", 2.0), ("c", 1.0)]) for k in keys}
    assert all(three[k] in (two[k], "c") for k in keys)  # nothing moves between a and b
    assert placement("reject", "k", [("a", True, 1.0)]) is None
    assert placement("shard:b", "k", [("a", True, 1.0)]) == "b"
    assert placement("hash", "k", [("a", False, 1.0), ("b", True, 1.0)]) == "b"


BASE = {"shards": {"a": {"urls": ["http://127.0.0.1:1"]}, "b": {"urls": ["http://127.0.0.1:2"]}},
        "routes": [{"path": "/v3/events", "mode": "scatter", "items": "data.item"}]}


@pytest.mark.parametrize("change, key, problem", [
    ({"routes": [{"prefix": "/v3/ref", "mode": "any"}]}, "routes[0].prefix", "must end with"),
    ({"routes": [{"path": "/a", "prefix": "/b/", "mode": "any"}]}, "routes[0].path",
     "exactly one of path"),
    ({"routes": [{"path": "/e", "mode": "route", "shard_key_body": "v", "placement": "x"}]},
     "routes[0].placement", "must be"),
    ({"routes": [{"path": "/e", "mode": "route", "shard_key_body": "v",
                  "placement": "shard:zz"}]}, "routes[0].placement", "names shard 'zz'"),
    ({"routes": [{"path": "/e", "mode": "scatter", "items": "i", "target_param": "vendor_id"}]},
     "routes[0].target_param", "no [shard_map.vendor_id] or [directory.vendor_id]"),
    ({"directory": {"v": {"file": "/nonexistent.csv", "redis_url": "redis://x"}}},
     "directory.v", "exactly one of file"),
    ({"directory": {"v": {"file": "/nonexistent.csv"}}}, "directory.v.file",
     "not a readable file"),
    ({"directory": {"v": {"redis_url": "redis://127.0.0.1:1", "unknown": "guess"}}},
     "directory.v.unknown", "must be one of"),
    ({"shard_map": {"v": {"k": "a>a"}}}, "shard_map.v.k", "to the shard it is on"),
    ({"shard_map": {"v": {"k": "a"}}, "directory": {"v": {"redis_url": "redis://h"}}},
     "directory.v", "[shard_map.v] already says"),
    ({"fallback": {"mode": "scatter"}}, "fallback.mode", "must be one of"),
    ({"shards": {"a": {"urls": ["http://127.0.0.1:1"], "weight": 0}}}, "shards.a.weight",
     "greater than 0"),
    ({"shards": {"a": {"urls": ["http://127.0.0.1:1"], "accepts_new": False}},
      "routes": [{"path": "/e", "mode": "route", "shard_key_body": "v", "placement": "hash"}]},
     "routes[0].placement", "no shard accepts new tenants"),
])
def test_directory_and_route_problems_name_the_key(change, key, problem):
    with pytest.raises(config.ConfigError) as e:
        config.parse({**BASE, **change}, "gw.toml")
    found = [p for p in e.value.problems if p.key == key]
    assert found and problem in found[0].problem, [str(p) for p in e.value.problems]
