"""The gateway's own endpoints over real HTTP: /livez, /readyz (shards down,
draining) and /healthz."""

from __future__ import annotations

from twisted.internet import defer, error, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from support import GatewayTestCase, free_port, items


class AdminTests(GatewayTestCase):
    @defer.inlineCallbacks
    def test_livez_readyz_and_healthz_answer_get_and_head_before_any_route(self):
        self.shard("a")
        self.shard("b")
        base = self.gateway()
        r = yield self.fetch(base + "/livez")
        self.assertEqual((r.code, r.json()), (200, {"status": "ok"}))
        self.assertEqual(r.headers.getRawHeaders(b"cache-control"), [b"no-store"])
        r = yield self.fetch(base + "/readyz")
        self.assertEqual(r.code, 200)
        self.assertEqual(r.json(), {"status": "ready",
                                    "reason": "2 of 2 shards have an available replica",
                                    "shards": {"total": 2, "available": 2, "required": 1,
                                               "unavailable": []}})
        r = yield self.fetch(base + "/healthz")
        self.assertEqual(r.code, 200)
        self.assertEqual(sorted(r.json()["shards"]), ["a", "b"])
        self.assertEqual(r.json()["shards"]["a"][0]["state"], "healthy")
        r = yield self.fetch(base + "/readyz", method="HEAD")
        self.assertEqual((r.code, r.body), (200, b""))
        r = yield self.fetch(base + "/livez", method="POST")  # not an admin request: no route
        self.assertEqual((r.code, r.json()["error"]["code"]), (404, "not_found"))

    @defer.inlineCallbacks
    def _ready_with_one_shard_down(self, admin):
        self.shard("a")
        base = self.gateway(shards={"a": self.urls["a"], "b": f"http://127.0.0.1:{free_port()}"},
                            health={"path": "/healthz", "interval": 0.1, "timeout": 0.05,
                                    "unhealthy_threshold": 1},
                            admin=admin)
        for _ in range(100):  # until the checks have taken b out
            r = yield self.fetch(base + "/healthz")
            if r.json()["shards"]["b"][0]["state"] == "unhealthy":
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        r = yield self.fetch(base + "/readyz")
        return base, r

    @defer.inlineCallbacks
    def test_readyz_is_503_when_fewer_shards_than_required_have_a_replica(self):
        base, r = yield self._ready_with_one_shard_down({"ready_min_shards": 1.0})
        self.assertEqual(r.code, 503)
        body = r.json()
        self.assertEqual(body["status"], "not_ready")
        self.assertIn("1 of 2 shards have an available replica; 2 are required", body["reason"])
        self.assertEqual(body["shards"]["unavailable"], ["b"])
        lst = yield self.fetch(base + "/v3/events")  # not ready, but it still serves
        self.assertEqual(lst.code, 200)
        self.assertEqual(len(lst.json()["data"]), 5)

    @defer.inlineCallbacks
    def test_readyz_stays_200_while_enough_shards_have_a_replica(self):
        _, r = yield self._ready_with_one_shard_down({"ready_min_shards": 1})
        self.assertEqual((r.code, r.json()["shards"]["unavailable"]), (200, ["b"]))

    @defer.inlineCallbacks
    def test_readyz_is_503_from_the_start_of_a_drain_while_the_gateway_still_serves(self):
        self.shard("a", items("a", 50))
        base = self.gateway(server={"drain_delay": 0.6})
        port = self.service.address.port
        r = yield self.fetch(base + "/readyz")
        self.assertEqual(r.code, 200)
        stopped = self.service.stopService()  # what SIGTERM does
        r = yield self.fetch(base + "/readyz")
        self.assertEqual(r.code, 503)
        self.assertEqual(r.json()["reason"], "draining: the gateway is shutting down")
        r = yield self.fetch(base + "/v3/events")  # new connections are still served
        self.assertEqual((r.code, len(r.json()["data"])), (200, 50))
        self.assertFalse(stopped.called)
        yield stopped
        with self.assertRaises(error.ConnectionRefusedError):
            yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Protocol())
