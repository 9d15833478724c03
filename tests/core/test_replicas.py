"""Replica choice, outlier ejection and health-check thresholds."""

from __future__ import annotations

from shardstream.core.config import HealthConfig, OutlierConfig
from shardstream.core.replicas import ReplicaSet


def test_least_in_flight_with_round_robin_ties():
    rs = ReplicaSet("s", ["a", "b", "c"], OutlierConfig())
    picks = [rs.pick(0).url for _ in range(6)]
    assert picks == ["a", "b", "c", "a", "b", "c"]  # all idle: in turn
    rs.replicas[0].in_flight = 3
    rs.replicas[1].in_flight = 1
    assert rs.pick(0).url == "c"
    rs.replicas[2].in_flight = 2
    assert rs.pick(0).url == "b"
    assert rs.pick(0, exclude=[rs.replicas[1]]).url == "c"


def test_consecutive_failures_eject_with_a_growing_back_off():
    rs = ReplicaSet("s", ["a", "b"], OutlierConfig(consecutive_failures=3, base_ejection=1.0,
                                                    max_ejection=5.0))
    a = rs.replicas[0]
    assert rs.failed(a, 0) is None and rs.failed(a, 0) is None
    assert rs.failed(a, 0) == 1.0  # the third in a row
    assert not a.available(0.5) and a.state(0.5) == "ejected"
    assert [rs.pick(0.5).url for _ in range(3)] == ["b", "b", "b"]
    assert a.available(1.0)
    assert rs.failed(a, 1.0) == 2.0  # on probation: one more failure ejects again, longer
    assert rs.failed(a, 3.0) == 4.0
    assert rs.failed(a, 7.0) == 5.0  # capped at max_ejection
    rs.succeeded(a)  # a success clears the record
    assert rs.failed(a, 20) is None and rs.failed(a, 20) is None
    assert rs.failed(a, 20) == 1.0


def test_a_success_between_failures_resets_the_count():
    rs = ReplicaSet("s", ["a"], OutlierConfig(consecutive_failures=2))
    a = rs.replicas[0]
    for _ in range(5):
        assert rs.failed(a, 0) is None
        rs.succeeded(a)
    assert a.available(0)


def test_no_available_replica_says_why():
    rs = ReplicaSet("s", ["a", "b"], OutlierConfig(consecutive_failures=1, base_ejection=2.0))
    rs.failed(rs.replicas[0], 10)
    health = HealthConfig(path="/h", unhealthy_threshold=1)
    assert rs.checked(rs.replicas[1], False, health)
    assert rs.pick(10.5) is None
    reason = rs.unavailable_reason(10.5)
    assert "replica 0 is ejected for another 1.5 s" in reason
    assert "replica 1 fails its health checks" in reason


def test_health_thresholds():
    health = HealthConfig(path="/h", healthy_threshold=2, unhealthy_threshold=3)
    rs = ReplicaSet("s", ["a"], OutlierConfig())
    a = rs.replicas[0]
    assert not rs.checked(a, False, health) and not rs.checked(a, False, health)
    assert not rs.checked(a, True, health)  # a good check breaks the streak
    assert not rs.checked(a, False, health) and not rs.checked(a, False, health)
    assert rs.checked(a, False, health) and not a.available(0)
    assert not rs.checked(a, True, health)
    assert rs.checked(a, True, health) and a.available(0)


def test_health_recovery_clears_an_ejection():
    health = HealthConfig(path="/h", healthy_threshold=1, unhealthy_threshold=1)
    rs = ReplicaSet("s", ["a"], OutlierConfig(consecutive_failures=1, base_ejection=30))
    a = rs.replicas[0]
    rs.failed(a, 0)
    assert not a.available(1)
    rs.checked(a, False, health)
    rs.checked(a, True, health)
    assert a.available(1)
