"""Partners' rate and concurrency limits (the local backend) over real HTTP."""

from __future__ import annotations

import os
import tempfile

import tomli_w
from twisted.internet import defer

from shardstream.core import keys
from support import GatewayTestCase, items, raw_connect


class LimitTests(GatewayTestCase):
    def start(self, **limits: float) -> tuple[str, dict[str, str]]:
        key_id, key = keys.new_key()
        path = os.path.join(tempfile.mkdtemp(), "keys.toml")
        with open(path, "wb") as f:
            tomli_w.dump({"partners": {"acme": {"scopes": ["/v3/events"], **limits, "keys": [
                {"id": key_id, "hash": keys.hash_key(key)}]}}}, f)
        base = self.gateway(auth={"keys_file": path})
        return base, {"Authorization": f"Bearer {key}"}

    @defer.inlineCallbacks
    def test_over_the_rate_is_429_with_retry_after_and_every_answer_tells_the_limit(self):
        self.shard("s1")
        base, auth = self.start(rate=0.5, burst=2)  # 2 at once, then one per 2 s
        answers = []
        for _ in range(3):
            r = yield self.fetch(base + "/v3/events", headers=auth)
            answers.append(r)
        self.assertEqual([r.code for r in answers], [200, 200, 429])
        policy = [r.headers.getRawHeaders(b"ratelimit-policy") for r in answers]
        self.assertEqual(policy, [[b'"default";q=2;w=4']] * 3)
        self.assertEqual([r.headers.getRawHeaders(b"ratelimit")[0].split(b";")[1]
                          for r in answers], [b"r=1", b"r=0", b"r=0"])
        denied = answers[2]
        self.assertEqual(denied.json()["error"]["code"], "rate_limited")
        self.assertEqual(denied.headers.getRawHeaders(b"retry-after"), [b"2"])
        self.assertEqual(denied.json()["error"]["retry_after"], 2)
        self.assertEqual(len(self.sims["s1"].requests), 2)  # the third reached no shard

    @defer.inlineCallbacks
    def test_list_streams_in_flight_are_capped_and_released_when_a_client_leaves(self):
        self.shard("s1", items("s1", 40), drip=0.05)  # two seconds of body
        # A token comes back every 20 s: none during the test, however slow the host.
        base, auth = self.start(concurrency=1, rate=0.05, burst=50)
        limits = self.service.gateway.limits
        client = yield raw_connect(self.service.address.port)
        client.transport.write(b"GET /v3/events HTTP/1.1\r\nHost: x\r\n"
                               b"Authorization: " + auth["Authorization"].encode() + b"\r\n\r\n")
        yield client.got_data
        self.assertEqual(limits.streams, {"acme": 1})
        r = yield self.fetch(base + "/v3/events", headers=auth)
        self.assertEqual((r.code, r.json()["error"]["code"]), (429, "concurrency_limited"))
        # The bucket as it stands (the refused request took no token): 49 of 50 left.
        self.assertEqual(r.headers.getRawHeaders(b"ratelimit-policy"),
                         [b'"default";q=50;w=1000'])
        self.assertEqual(r.headers.getRawHeaders(b"ratelimit")[0].split(b";")[1], b"r=49")
        client.transport.abortConnection()  # killed mid-stream
        yield client.closed
        yield self.wait_for(lambda: limits.streams == {}, what="the stream's slot back")
        self.sims["s1"].drip = 0
        r = yield self.fetch(base + "/v3/events", headers=auth)
        self.assertEqual(r.code, 200)
        self.assertEqual(limits.streams, {})  # released on completion too

    @defer.inlineCallbacks
    def test_a_partner_without_limits_gets_no_ratelimit_fields(self):
        self.shard("s1")
        base, auth = self.start()
        r = yield self.fetch(base + "/v3/events", headers=auth)
        self.assertEqual(r.code, 200)
        self.assertIsNone(r.headers.getRawHeaders(b"ratelimit"))


class RelayedLimitTests(GatewayTestCase):
    @defer.inlineCallbacks
    def test_a_shards_own_ratelimit_fields_never_replace_the_partners(self):
        from twisted.internet import reactor
        from twisted.web.resource import Resource
        from twisted.web.server import Site

        class Shard(Resource):
            isLeaf = True

            def render_GET(self, request):
                request.setHeader(b"ratelimit", b'"shard";r=999;t=0')
                request.setHeader(b"content-type", b"application/json")
                return b"{}"

        port = reactor.listenTCP(0, Site(Shard()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        key_id, key = keys.new_key()
        path = os.path.join(tempfile.mkdtemp(), "keys.toml")
        with open(path, "wb") as f:
            tomli_w.dump({"partners": {"acme": {"scopes": ["/v/{vendor_id}"], "rate": 1,
                                                "burst": 3, "keys": [
                {"id": key_id, "hash": keys.hash_key(key)}]}}}, f)
        base = self.gateway(routes=[{"path": "/v/{vendor_id}", "mode": "route",
                                     "shard_key": "vendor_id"}],
                            shards={"s1": f"http://127.0.0.1:{port.getHost().port}"},
                            shard_map={"vendor_id": {"v1": "s1"}}, auth={"keys_file": path})
        r = yield self.fetch(base + "/v/v1", headers={"Authorization": f"Bearer {key}"})
        self.assertEqual(r.code, 200)
        self.assertEqual(r.headers.getRawHeaders(b"ratelimit"), [b'"default";r=2;t=1'])
