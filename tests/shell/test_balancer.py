"""The balancer across a reload."""

from __future__ import annotations




def test_a_reload_keeps_replica_state_but_not_a_health_verdict_nobody_will_revisit():
    from twisted.internet.task import Clock

    from shardstream.core import config
    from shardstream.upstream.balancer import Balancer

    def cfg(health):
        return config.parse({"shards": {"a": {"urls": ["http://127.0.0.1:1", "http://127.0.0.1:2"]}},
                             "routes": [{"path": "/x", "mode": "scatter", "items": "item"}],
                             **({"health": {"path": "/h"}} if health else {})})

    clock = Clock()
    old = Balancer(clock, None, cfg(health=True))
    down, ejected = old.sets["a"].replicas
    down.checked_up = False
    ejected.failures, ejected.ejected_until = 5, 30.0
    kept = Balancer(clock, None, cfg(health=True), previous=old).sets["a"].replicas
    assert [r.state(0) for r in kept] == ["unhealthy", "ejected"]
    dropped = Balancer(clock, None, cfg(health=False), previous=old).sets["a"].replicas
    assert [r.state(0) for r in dropped] == ["healthy", "ejected"]  # no checks left to say "up"
