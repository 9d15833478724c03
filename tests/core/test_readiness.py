"""Readiness: draining, and how many shards have a replica to send to."""

from __future__ import annotations

from shardstream.core.config import AdminConfig
from shardstream.core.readiness import readiness

SHARDS = ["eu", "us", "apac", "mea"]


def test_ready_when_enough_shards_have_an_available_replica():
    r = readiness(AdminConfig(), SHARDS, ["mea", "us"], draining=False)
    assert r.ready and r.required == 1 and r.unavailable == ("us", "mea")
    assert r.body() == {"status": "ready", "reason": "2 of 4 shards have an available replica",
                        "shards": {"total": 4, "available": 2, "required": 1,
                                   "unavailable": ["us", "mea"]}}


def test_not_ready_below_the_count_or_share_asked_for():
    assert readiness(AdminConfig(ready_min_shards=3), SHARDS, ["mea", "us"], False).ready is False
    half = readiness(AdminConfig(ready_min_shards=0.5), SHARDS, ["mea", "us"], False)
    assert half.ready and half.required == 2
    most = readiness(AdminConfig(ready_min_shards=0.75), SHARDS, ["mea", "us"], False)
    assert not most.ready and most.required == 3
    assert most.body()["status"] == "not_ready"
    assert "2 of 4 shards" in most.reason and "3 are required" in most.reason
    assert not readiness(AdminConfig(), SHARDS, SHARDS, False).ready  # none at all


def test_a_draining_gateway_is_never_ready():
    r = readiness(AdminConfig(), SHARDS, [], draining=True)
    assert not r.ready and r.reason.startswith("draining")
    assert r.body()["shards"]["available"] == 4
