"""Header hygiene and request limits, produced for real on a raw connection."""

from __future__ import annotations

import json

from twisted.internet import defer, reactor, task

from twisted.web.resource import Resource
from twisted.web.server import Site

from support import GatewayTestCase, items, raw_connect

ROUTES = [{"path": "/v3/events", "mode": "scatter", "items": "data.item"},
          {"path": "/v3/vendors/{vendor_id}/events", "mode": "route", "shard_key": "vendor_id"}]


class HygieneTests(GatewayTestCase):
    def start(self, **server: object) -> str:
        self.shard("s1", items("s1", 2, vendor_id="v1"))
        return self.gateway(routes=ROUTES, shard_map={"vendor_id": {"v1": "s1"}},
                            server={"header_timeout": 0.3, **server})

    @defer.inlineCallbacks
    def raw(self, data: bytes, wait_close: bool = True) -> defer.Deferred:
        client = yield raw_connect(self.service.address.port)
        client.transport.write(data)
        if wait_close:
            yield client.closed
        return client

    def answer(self, client) -> tuple[int, dict]:
        head, _, body = bytes(client.received).partition(b"\r\n\r\n")
        status = int(head.split(b" ")[1])
        # Every answer carries a request id, these refusals included.
        self.assertRegex(head, rb"\r\n(?i:X-Request-ID): [A-Za-z0-9._:/+=@-]{1,128}\r\n")
        return status, json.loads(body) if body.startswith(b"{") else {}

    @defer.inlineCallbacks
    def test_a_long_request_line_is_414_and_long_or_many_headers_431(self):
        self.start()
        client = yield self.raw(b"GET /v3/events?" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n")
        self.assertEqual(self.answer(client), (414, {"error": {
            "code": "uri_too_long", "message": "the request line is over 16384 bytes"}}))
        client = yield self.raw(b"GET /v3/events HTTP/1.1\r\nX-Request-ID: big-1\r\nHost: x\r\nX-Big: "
                                + b"b" * 20000 + b"\r\n\r\n")
        self.assertEqual(self.answer(client)[0], 431)
        self.assertIn(b"HTTP/1.1 431 Request Header Fields Too Large\r\n", bytes(client.received))
        self.assertIn(b"\r\nX-Request-ID: big-1\r\n", bytes(client.received))  # the client's
        many = b"".join(b"X-H%d: v\r\n" % i for i in range(150))
        client = yield self.raw(b"GET /v3/events HTTP/1.1\r\n" + many + b"\r\n")
        status, body = self.answer(client)
        self.assertEqual((status, body["error"]["code"]), (431, "headers_too_large"))
        self.assertIn("more than 100 header fields", body["error"]["message"])
        self.assertEqual(self.sims["s1"].requests, [])

    @defer.inlineCallbacks
    def test_a_body_declared_too_large_is_413_at_once(self):
        self.start(max_body=1000)
        client = yield self.raw(b"POST /v3/vendors/v1/events HTTP/1.1\r\nHost: x\r\n"
                                b"X-Request-ID: huge-1\r\n"
                                b"Content-Length: 100000000000000000000\r\n\r\n")
        status, body = self.answer(client)  # the connection closed: no body was waited for
        self.assertEqual((status, body["error"]["code"]), (413, "body_too_large"))
        self.assertIn(b"\r\nX-Request-ID: huge-1\r\n", bytes(client.received))
        self.assertEqual(self.sims["s1"].requests, [])

    @defer.inlineCallbacks
    def test_a_request_head_that_comes_too_slowly_is_closed_with_408(self):
        self.start()
        client = yield self.raw(b"GET /v3/events HTTP/1.1\r\nHost: x\r\n", wait_close=False)
        for _ in range(3):  # a byte now and then keeps Twisted's idle timeout away
            yield task.deferLater(reactor, 0.12, client.transport.write, b"X")
        yield client.closed
        self.assertEqual(self.answer(client)[0], 408)
        # A connection that sends nothing at all is as slow: closed after the same time.
        started = reactor.seconds()
        client = yield self.raw(b"", wait_close=True)
        self.assertEqual(self.answer(client)[0], 408)
        self.assertLess(reactor.seconds() - started, 5)  # header_timeout (0.3 s), not 60 s

    @defer.inlineCallbacks
    def test_no_versions_and_no_shard_server_fields_go_out(self):
        base = self.start()
        r = yield self.fetch(base + "/v3/events")
        self.assertEqual(r.headers.getRawHeaders(b"server"), [b"shardstream"])
        r = yield self.fetch(base + "/v3/vendors/v1/events")  # relayed from the shard
        self.assertEqual(r.code, 200)
        self.assertEqual(r.headers.getRawHeaders(b"server"), [b"shardstream"])  # not Twisted's
        r = yield self.fetch(base + "/nope")
        self.assertEqual(r.headers.getRawHeaders(b"server"), [b"shardstream"])

    @defer.inlineCallbacks
    def test_forwarding_fields_come_from_the_real_peer_unless_it_is_a_trusted_proxy(self):
        base = self.start()
        spoof = {"X-Forwarded-For": "6.6.6.6", "Forwarded": "for=6.6.6.6;proto=https",
                 "X-Forwarded-Proto": "https", "Connection": "X-Secret", "X-Secret": "s"}
        yield self.fetch(base + "/v3/vendors/v1/events", headers=spoof)
        seen = self.sims["s1"].requests[-1]["headers"]
        self.assertEqual(seen["x-forwarded-for"], ["127.0.0.1"])
        self.assertEqual(seen["x-forwarded-proto"], ["http"])
        self.assertTrue(seen["forwarded"][0].startswith("for=127.0.0.1;proto=http;host="))
        self.assertNotIn("x-secret", seen)  # named in Connection: hop-by-hop

    @defer.inlineCallbacks
    def test_a_host_field_cannot_forge_a_forwarded_element_or_a_partner(self):
        base = self.start()
        yield self.fetch(base + "/v3/vendors/v1/events", headers={
            "Host": 'a", for=6.6.6.6;host="x', "X-Shardstream-Partner": "bigpartner"})
        seen = self.sims["s1"].requests[-1]["headers"]
        self.assertEqual(seen["forwarded"], ["for=127.0.0.1;proto=http"])
        self.assertNotIn("x-forwarded-host", seen)
        self.assertNotIn("x-shardstream-partner", seen)  # only the gateway says who asks

    @defer.inlineCallbacks
    def test_a_slow_answer_on_a_keep_alive_connection_is_not_a_slow_head(self):
        self.shard("slow", items("slow", 2, vendor_id="v1"), delay=0.6)
        self.gateway(routes=ROUTES, shard_map={"vendor_id": {"v1": "slow"}},
                     shards={"slow": self.urls["slow"]}, server={"header_timeout": 0.2})
        request = b"GET /v3/vendors/v1/events HTTP/1.1\r\nHost: x\r\n\r\n"
        client = yield self.raw(request + request[:10], wait_close=False)  # the next one early
        yield task.deferLater(reactor, 0.1, client.transport.write, request[10:])
        yield self.wait_for(lambda: client.received.count(b"HTTP/1.1 200") == 2, timeout=5,
                            what="both answers")
        self.assertNotIn(b"HTTP/1.1 408", bytes(client.received))  # not "408" in a request id
        client.transport.loseConnection()

    @defer.inlineCallbacks
    def test_a_trusted_proxys_forwarding_fields_are_kept_and_extended(self):
        base = self.start(trusted_proxies=["127.0.0.0/8"])
        yield self.fetch(base + "/v3/vendors/v1/events", headers={
            "X-Forwarded-For": "203.0.113.7", "Forwarded": "for=203.0.113.7;proto=https",
            "X-Forwarded-Proto": "https"})
        seen = self.sims["s1"].requests[-1]["headers"]
        self.assertEqual(seen["x-forwarded-for"], ["203.0.113.7, 127.0.0.1"])
        self.assertEqual(seen["x-forwarded-proto"], ["https"])
        self.assertTrue(seen["forwarded"][0].startswith(
            "for=203.0.113.7;proto=https, for=127.0.0.1;proto=https;host="))


    @defer.inlineCallbacks
    def test_encoded_slashes_dot_segments_and_doubled_slashes_reach_no_shard(self):
        self.start()
        for target in (b"/v3/vendors/v1%2F..%2F..%2Fadmin/events", b"/v3/vendors/%2e%2e/events",
                       b"/v3//events", b"/v3/events/./", b"/v3/vendors/v1/../v2/events"):
            client = yield self.raw(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n"
                                    b"Connection: close\r\n\r\n")
            status, body = self.answer(client)
            self.assertEqual((status, body["error"]["code"]), (400, "bad_path"), target)
        self.assertEqual(self.sims["s1"].requests, [])


class _Chatty(Resource):
    """A shard that says what it runs on."""

    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"server", b"Apache/2.4.1")
        request.setHeader(b"x-powered-by", b"PHP/5.6")
        request.setHeader(b"x-kept", b"yes")
        request.setHeader(b"content-type", b"application/json")
        return b"{}"


class ShardHeaderTests(GatewayTestCase):
    @defer.inlineCallbacks
    def test_shard_fields_that_say_too_much_are_dropped(self):
        port = reactor.listenTCP(0, Site(_Chatty()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        base = self.gateway(routes=ROUTES[1:],
                            shards={"s1": f"http://127.0.0.1:{port.getHost().port}"},
                            shard_map={"vendor_id": {"v1": "s1"}})
        r = yield self.fetch(base + "/v3/vendors/v1/events")
        self.assertEqual(r.code, 200)
        self.assertEqual(r.headers.getRawHeaders(b"server"), [b"shardstream"])
        self.assertIsNone(r.headers.getRawHeaders(b"x-powered-by"))
        self.assertEqual(r.headers.getRawHeaders(b"x-kept"), [b"yes"])
