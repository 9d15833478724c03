"""Route mode and the gateway's own answers, against real loopback shards."""

from __future__ import annotations

import json

import treq
from twisted.internet import defer
from twisted.web.client import ResponseFailed

from support import GatewayTestCase, RawShardFactory, free_port, items, raw_connect

ROUTES = [
    {"path": "/v3/events", "mode": "scatter", "items": "data.item"},
    {"path": "/v3/vendors/{vendor_id}/events", "mode": "route", "shard_key": "vendor_id"},
    {"path": "/echo/{vendor_id}", "mode": "route", "shard_key": "vendor_id"},
]
SHARD_MAP = {"vendor_id": {"v1": "s1", "v2": "s2", "v 3": "s2"}}


class RouteTests(GatewayTestCase):
    def start(self, upstream=None, server=None, **s2):
        self.shard("s1", items("s1", 3, vendor_id="v1"))
        self.shard("s2", items("s2", 3, vendor_id="v2"), **s2)
        return self.gateway(routes=ROUTES, shard_map=SHARD_MAP, upstream=upstream,
                            server=server or {})

    @defer.inlineCallbacks
    def test_write_with_body_goes_to_the_owning_shard_only(self):
        base = self.start()
        body = json.dumps({"title": "Harbour tour", "price": "12.50"}).encode()
        r = yield self.fetch(base + "/v3/vendors/v2/events?x=1", method="POST", body=body,
                             headers={"Content-Type": "application/json", "X-Trace": "abc"})
        self.assertEqual(r.code, 201)
        created = r.json()["data"]
        self.assertEqual((created["title"], created["vendor_id"], created["id"]),
                         ("Harbour tour", "v2", 4))
        self.assertEqual(r.headers.getRawHeaders("x-shard"), ["s2"])
        self.assertEqual(self.sims["s1"].requests, [])
        (req,) = self.sims["s2"].requests
        self.assertEqual((req["method"], req["uri"], req["body"]),
                         ("POST", "/v3/vendors/v2/events?x=1", body))
        self.assertEqual(req["headers"]["x-trace"], ["abc"])
        self.assertEqual(req["headers"]["content-type"], ["application/json"])

    @defer.inlineCallbacks
    def test_large_body_streams_through_unchanged(self):
        base = self.start()
        body = bytes(range(256)) * 4096  # 1 MiB, spooled to disk by twisted.web
        r = yield self.fetch(base + "/echo/v1", method="PUT", body=body)
        self.assertEqual(r.code, 200)
        self.assertEqual(self.sims["s1"].requests[0]["body"], body)

    @defer.inlineCallbacks
    def test_response_is_relayed_unparsed_minus_hop_by_hop_headers(self):
        base = self.start()
        r = yield self.fetch(base + "/v3/vendors/v1/events")
        self.assertEqual(r.code, 200)
        # treq (the test's client) leaves an empty Content-Encoding after its gzip check
        self.assertIn(r.headers.getRawHeaders("content-encoding"), (None, [""]))
        self.assertEqual(r.headers.getRawHeaders("x-shard"), ["s1"])
        direct = yield self.fetch(self.urls["s1"] + "/v3/vendors/v1/events")
        self.assertEqual(r.body, direct.body)  # byte for byte: never re-encoded

    @defer.inlineCallbacks
    def test_fields_a_shard_names_in_connection_are_not_relayed(self):
        from twisted.internet import reactor
        from twisted.web import resource, server

        class Leaky(resource.Resource):
            isLeaf = True

            def render(self, request):
                request.setHeader(b"connection", b"X-Leak, keep-alive")
                request.setHeader(b"x-leak", b"secret-hop")
                request.setHeader(b"x-kept", b"end-to-end")
                return b'{"ok": true}'

        port = reactor.listenTCP(0, server.Site(Leaky()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}"
        for client in ("lean", "twisted"):
            base = self.gateway(routes=ROUTES, shard_map=SHARD_MAP, shards={"s1": url, "s2": url},
                                upstream={"client": client})
            for method, body in (("GET", None), ("POST", b"{}"), ("HEAD", None)):
                r = yield self.fetch(base + "/v3/vendors/v1/events", method=method, body=body)
                self.assertEqual(r.code, 200, (client, method))
                self.assertIsNone(r.headers.getRawHeaders("x-leak"), (client, method))
                self.assertEqual(r.headers.getRawHeaders("x-kept"), ["end-to-end"])

    @defer.inlineCallbacks
    def test_percent_encoded_key(self):
        base = self.start()
        r = yield self.fetch(base + "/echo/v%203")
        self.assertEqual(r.code, 200)
        self.assertEqual(self.sims["s2"].requests[0]["uri"], "/echo/v%203")

    @defer.inlineCallbacks
    def test_undecodable_key_is_400(self):
        base = self.start()
        r = yield self.fetch(base + "/echo/v%FF")
        self.assertEqual(r.code, 400)
        self.assertEqual(r.json()["error"]["code"], "bad_request")

    @defer.inlineCallbacks
    def test_unknown_key_is_404_and_reaches_no_shard(self):
        base = self.start()
        r = yield self.fetch(base + "/v3/vendors/v9/events", method="POST", body=b"{}")
        self.assertEqual(r.code, 404)
        self.assertEqual(r.json()["error"]["code"], "unknown_shard_key")
        self.assertIn("v9", r.json()["error"]["message"])
        self.assertEqual(self.sims["s1"].requests + self.sims["s2"].requests, [])

    @defer.inlineCallbacks
    def test_shard_error_response_is_relayed_as_it_is(self):
        base = self.start()
        r = yield self.fetch(base + "/v3/vendors/v1/events", method="DELETE")
        self.assertEqual(r.code, 405)
        self.assertEqual(r.json(), {"error": "method not allowed"})  # the shard's own body

    @defer.inlineCallbacks
    def test_a_demo_shard_refuses_a_bad_query_with_400_json_not_a_500(self):
        """Found by the fuzz test: ``offset=|x`` made the demo shard raise."""
        base = self.start()
        for query in ("offset=%7C%C3%BC", "limit=-1", "offset=1e3", "sort=a..b", "limit=%FF"):
            r = yield self.fetch(base + "/v3/vendors/v1/events?" + query)
            self.assertEqual(r.code, 400, query)
            self.assertEqual(r.json()["error"]["code"], "bad_query", query)
        r = yield self.fetch(base + "/v3/vendors/v1/events?offset=1&limit=2")
        self.assertEqual(r.code, 200)

    @defer.inlineCallbacks
    def test_unreachable_shard_is_502(self):
        self.shard("s1")
        base = self.gateway(routes=ROUTES, shard_map=SHARD_MAP,
                            shards={"s1": self.urls["s1"], "s2": f"http://127.0.0.1:{free_port()}"})
        r = yield self.fetch(base + "/v3/vendors/v2/events")
        self.assertEqual(r.code, 502)
        err = r.json()["error"]
        self.assertEqual((err["code"], err["shard"], err["shard_error"]),
                         ("shard_unavailable", "s2", "connect_refused"))

    @defer.inlineCallbacks
    def test_hanging_shard_is_504(self):
        base = self.start(upstream={"first_byte_timeout": 0.2}, fail="hang")
        r = yield self.fetch(base + "/v3/vendors/v2/events")
        self.assertEqual(r.code, 504)
        self.assertEqual(r.json()["error"]["code"], "shard_timeout")

    @defer.inlineCallbacks
    def test_failure_after_the_response_began_aborts_the_client_connection(self):
        base = self.start(upstream={"idle_timeout": 0.2}, fail="hang_body")
        resp = yield treq.get(base + "/v3/vendors/v2/events", pool=self._pool, unbuffered=True)
        self.assertEqual(resp.code, 200)
        with self.assertRaises(ResponseFailed):
            yield treq.collect(resp, lambda b: None)

    @defer.inlineCallbacks
    def test_body_over_max_body_is_413(self):
        base = self.start(server={"max_body": 1000})
        r = yield self.fetch(base + "/echo/v1", method="POST", body=b"x" * 1001)
        self.assertEqual(r.code, 413)
        self.assertEqual(r.json()["error"]["code"], "body_too_large")
        self.assertEqual(self.sims["s1"].requests, [])
        r = yield self.fetch(base + "/echo/v1", method="POST", body=b"x" * 1000)
        self.assertEqual(r.code, 200)


class UploadStreamingTests(GatewayTestCase):
    def start(self, mode=None, **server):
        self.raw = RawShardFactory(mode)
        url = self.raw.listen(self)
        return self.gateway(
            routes=[{"path": "/up/{k}", "mode": "route", "shard_key": "k"}],
            shard_map={"k": {"a": "raw"}}, shards={"raw": url}, server=server)

    @defer.inlineCallbacks
    def test_body_reaches_the_shard_while_the_client_is_still_sending_it(self):
        self.start()
        half = b"x" * 1_000_000
        client = yield raw_connect(self.service.address.port)
        client.transport.write(b"POST /up/a HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
                               % (2 * len(half)) + half)
        yield self.wait_for(lambda: self.raw.connections
                            and self.raw.connections[0].body_bytes() == len(half),
                            what="the first half to reach the shard")
        client.transport.write(half)
        yield self.wait_for(lambda: b'{"stored":2000000}' in client.received,
                            what="the shard's answer")
        self.assertTrue(client.received.startswith(b"HTTP/1.1 201 Created"))
        client.transport.loseConnection()

    @defer.inlineCallbacks
    def test_a_shard_that_answers_before_the_upload_ends_is_relayed_once_it_has(self):
        self.start("early")
        client = yield raw_connect(self.service.address.port)
        client.transport.write(b"POST /up/a HTTP/1.1\r\nHost: t\r\nContent-Length: 200000\r\n\r\n"
                               + b"x" * 100_000)
        yield self.wait_for(lambda: self.raw.connections
                            and getattr(self.raw.connections[0], "answered", False),
                            what="the shard's early answer")
        yield self.wait_for(lambda: self.raw.connections[0].body_bytes() > 0, what="body bytes")
        self.assertEqual(client.received, b"")  # nothing may be written mid-request
        client.transport.write(b"x" * 100_000)
        yield self.wait_for(lambda: b'{"error":"auth"}' in client.received, what="the 401")
        head = client.received.split(b"\r\n\r\n")[0].decode().lower()
        self.assertTrue(head.startswith("http/1.1 401 unauthorized"), head)
        self.assertIn("www-authenticate: bearer", head)
        self.assertIn("content-type: application/json", head)
        client.transport.loseConnection()

    @defer.inlineCallbacks
    def test_a_shard_that_resets_during_the_upload_is_a_clean_502(self):
        self.start("reset")
        r = yield self.fetch(self.service_url() + "/up/a", method="POST", body=b"y" * 3_000_000)
        self.assertEqual(r.code, 502)
        err = r.json()["error"]
        self.assertIn(err["shard_error"], ("request_failed", "no_response"))
        self.assertNotIn("Failure", err["message"])

    def service_url(self):
        return f"http://127.0.0.1:{self.service.address.port}"

    @defer.inlineCallbacks
    def test_client_gone_mid_upload_closes_the_shard_connection(self):
        self.start()
        client = yield raw_connect(self.service.address.port)
        client.transport.write(b"PUT /up/a HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n"
                               + b"y" * 50_000)
        yield self.wait_for(lambda: self.raw.connections
                            and self.raw.connections[0].body_bytes() == 50_000,
                            what="the partial body to reach the shard")
        client.transport.abortConnection()
        yield self.wait_for(lambda: self.raw.closed == 1, what="the shard connection to close")

    @defer.inlineCallbacks
    def test_chunked_upload_over_max_body_is_413_and_never_completes_at_the_shard(self):
        self.start(max_body=100_000)
        client = yield raw_connect(self.service.address.port)
        client.transport.write(b"POST /up/a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (60_000, b"z" * 60_000)
        client.transport.write(chunk)
        yield self.wait_for(lambda: self.raw.connections
                            and self.raw.connections[0].body_bytes() >= 60_000,
                            what="the first chunk to reach the shard")
        client.transport.write(chunk * 2 + b"0\r\n\r\n")
        yield self.wait_for(lambda: b"body_too_large" in client.received, what="the 413")
        self.assertTrue(client.received.startswith(b"HTTP/1.1 413"))
        yield self.wait_for(lambda: self.raw.closed == 1, what="the shard connection to close")
        self.assertFalse(getattr(self.raw.connections[0], "answered", False))
        client.transport.loseConnection()


class RelayFidelityTests(GatewayTestCase):
    @defer.inlineCallbacks
    def test_gzip_and_query_pass_through_unchanged(self):
        from twisted.web.resource import EncodingResourceWrapper
        from twisted.web.server import GzipEncoderFactory

        from shardstream.web.site import TrackingSite
        from shardstream.demo.shardsim import ShardSim
        from twisted.internet import reactor

        sim = ShardSim("z", items("z", 200, vendor_id="v1"))
        site = TrackingSite(EncodingResourceWrapper(sim, [GzipEncoderFactory()]))
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self._sites.append(site)
        url = f"http://127.0.0.1:{port.getHost().port}"
        base = self.gateway(routes=ROUTES, shard_map=SHARD_MAP, shards={"s1": url, "s2": url})
        client = yield raw_connect(self.service.address.port)
        client.transport.write(b"GET /v3/vendors/v1/events?q=a|b HTTP/1.1\r\nHost: t\r\n"
                               b"Accept-Encoding: gzip\r\nConnection: close\r\n\r\n")
        yield client.closed
        head, _, body = client.received.partition(b"\r\n\r\n")
        self.assertIn(b"content-encoding: gzip", head.lower())
        self.assertEqual(sim.requests[0]["uri"], "/v3/vendors/v1/events?q=a|b")
        self.assertEqual(sim.requests[0]["headers"]["accept-encoding"], ["gzip"])
        self.assertEqual(base[:4], "http")


class GatewayAnswerTests(GatewayTestCase):
    def setUp(self):
        super().setUp()
        self.shard("s1")
        self.base = self.gateway(routes=ROUTES, shard_map=SHARD_MAP, shards={
            "s1": self.urls["s1"], "s2": self.urls["s1"]})

    @defer.inlineCallbacks
    def test_unknown_path_is_404_json(self):
        r = yield self.fetch(self.base + "/v4/nothing")
        self.assertEqual(r.code, 404)
        self.assertEqual(r.headers.getRawHeaders("content-type"), ["application/json"])
        self.assertEqual(r.json()["error"]["code"], "not_found")

    @defer.inlineCallbacks
    def test_write_to_a_scatter_route_is_405_with_allow(self):
        r = yield self.fetch(self.base + "/v3/events", method="POST", body=b"{}")
        self.assertEqual(r.code, 405)
        self.assertEqual(r.headers.getRawHeaders("allow"), ["GET"])
        self.assertEqual(r.json()["error"]["code"], "method_not_allowed")
        self.assertEqual(self.sims["s1"].requests, [])

    @defer.inlineCallbacks
    def test_healthz(self):
        r = yield self.fetch(self.base + "/healthz")
        self.assertEqual(r.code, 200)
        doc = r.json()
        self.assertEqual(doc["status"], "ok")
        self.assertEqual(sorted(doc["shards"]), sorted(s.name for s in self.service.config.shards))
        for replicas in doc["shards"].values():
            self.assertEqual([(r["replica"], r["state"]) for r in replicas], [(0, "healthy")])
