"""Scatter routes against real loopback shards: union, streaming, NDJSON, failures."""

from __future__ import annotations

import json

from twisted.internet import defer

from shardstream.core import parse, split

from support import GatewayTestCase, free_port, items


def ids(doc: dict) -> list[tuple[str, int]]:
    return sorted((i["shard"], i["id"]) for i in doc["data"])


def failed(doc: dict) -> dict[str, dict]:
    return {f["shard"]: f for f in doc["meta"]["shards"]["failed"]}


class InterleavedTests(GatewayTestCase):
    @defer.inlineCallbacks
    def test_items_are_exactly_the_union_of_the_shards_items(self):
        self.shard("s1", items("s1", 120), drip=0.001)
        self.shard("s2", items("s2", 7))
        self.shard("s3", [])
        self.shard("s4", items("s4", 300), batch=7)
        base = self.gateway()
        r = yield self.fetch(base + "/v3/events")
        self.assertEqual(r.code, 200)
        self.assertEqual(r.headers.getRawHeaders("content-type"), ["application/json"])
        doc = r.json()
        expected = sorted(
            (s, i) for s, n in (("s1", 120), ("s2", 7), ("s4", 300)) for i in range(1, n + 1)
        )
        self.assertEqual(ids(doc), expected)
        self.assertEqual(len(doc["data"]), len(expected))  # nothing twice
        self.assertEqual(doc["meta"], {"shards": {"total": 4, "succeeded": 4, "failed": []},
                                       "complete": True,
                                       "next_cursor": None})
        self.assertEqual(list(doc), ["data", "meta"])  # meta last

    @defer.inlineCallbacks
    def test_first_items_reach_the_client_before_the_slow_shard_answers(self):
        self.shard("fast", items("fast", 3))
        self.shard("slow", items("slow", 3), delay=1.0)
        base = self.gateway()
        seen = []  # what the slow shard had sent when the first item arrived

        def watch(chunk):
            if b'"id"' in chunk and not seen:
                seen.append(self.sims["slow"].bytes_sent)

        r = yield self.fetch(base + "/v3/events", on_chunk=watch)
        self.assertEqual(seen, [0])
        self.assertEqual(len(r.json()["data"]), 6)

    @defer.inlineCallbacks
    def test_query_string_and_headers_go_to_every_shard(self):
        self.shard("s1")
        self.shard("s2")
        base = self.gateway()
        r = yield self.fetch(base + "/v3/events?vendor_id=x&b=%20c",
                             headers={"Authorization": "Bearer t", "Cookie": "sid=1",
                                      "Accept": "text/html",
                                      "Connection": "close, X-Hop", "X-Hop": "1"})
        self.assertEqual(r.code, 200)
        for sim in self.sims.values():
            (req,) = sim.requests
            self.assertEqual(req["uri"], "/v3/events?vendor_id=x&b=%20c")
            # a client's credentials never reach a shard, even without [auth]
            self.assertNotIn("authorization", req["headers"])
            self.assertNotIn("cookie", req["headers"])
            self.assertEqual(req["headers"]["accept"], ["application/json"])
            self.assertNotIn("x-hop", req["headers"])
            self.assertEqual(req["headers"]["x-forwarded-for"], ["127.0.0.1"])

    @defer.inlineCallbacks
    def test_numbers_and_text_pass_through_exactly(self):
        item = {"id": 1, "shard": "s1", "big": 123456789012345678901234567890,
                "price": 0.1000000000000000055511151231257827, "neg": -1e-7, "t": "é ✓ \" \\ \u2028"}
        self.shard("s1", [item])
        sent = json.dumps(item).encode()  # what the shard sends, spaces and escapes included
        for parser in ("python", "native") if split.NATIVE else ("python",):
            base = self.gateway(server={"item_parser": parser})
            r = yield self.fetch(base + "/v3/events")
            text = r.body.decode()
            if parser == "native":  # the shard's bytes, unchanged
                self.assertIn(b'{"data":[' + sent + b'],', r.body)
            else:  # decoded and encoded again: the same values, the same digits
                self.assertIn('"big":123456789012345678901234567890', text)
                self.assertIn('"price":0.1,', text)  # json.dumps of the float: the shard's digits
            doc = r.json()
            self.assertEqual(doc["data"][0]["t"], item["t"])
            self.assertEqual(doc["data"][0]["big"], item["big"])


class NDJSONTests(GatewayTestCase):
    @defer.inlineCallbacks
    def test_one_item_per_line_and_meta_last(self):
        self.shard("s1", items("s1", 4))
        self.shard("s2", items("s2", 3), fail="status")
        base = self.gateway()
        r = yield self.fetch(base + "/v3/events", headers={"Accept": "application/x-ndjson"})
        self.assertEqual(r.headers.getRawHeaders("content-type"), ["application/x-ndjson"])
        self.assertTrue(r.body.endswith(b"\n"))
        lines = [json.loads(line) for line in r.body.decode().splitlines()]
        self.assertEqual(sorted(i["id"] for i in lines[:-1]), [1, 2, 3, 4])
        meta = lines[-1]
        self.assertEqual(list(meta), ["meta"])
        self.assertEqual(meta["meta"]["shards"]["failed"][0]["shard"], "s2")


class FailureTests(GatewayTestCase):
    """Each failure kind: the healthy shard's items all arrive, the failed one is named."""

    @defer.inlineCallbacks
    def check(self, bad_url=None, upstream=None, expect_items=0, **bad):
        self.shard("ok", items("ok", 50))
        shards = dict(self.urls)
        if bad_url is None:
            bad_url = self.shard("bad", items("bad", 40), **bad)
        shards["bad"] = bad_url
        base = self.gateway(shards=shards, upstream=upstream)
        r = yield self.fetch(base + "/v3/events")
        self.assertEqual(r.code, 200)
        doc = r.json()
        ok_ids = sorted(i["id"] for i in doc["data"] if i["shard"] == "ok")
        self.assertEqual(ok_ids, list(range(1, 51)))
        bad_items = [i for i in doc["data"] if i["shard"] == "bad"]
        self.assertEqual(doc["meta"]["shards"]["total"], 2)
        self.assertEqual(doc["meta"]["shards"]["succeeded"], 1)
        f = failed(doc)["bad"]
        self.assertEqual(f["items_delivered"], len(bad_items))
        if expect_items is not None:
            self.assertEqual(len(bad_items), expect_items)
        return f

    @defer.inlineCallbacks
    def test_connection_refused(self):
        f = yield self.check(bad_url=f"http://127.0.0.1:{free_port()}")
        self.assertEqual((f["error"], f["status"]), ("connect_refused", None))

    @defer.inlineCallbacks
    def test_connect_timeout(self):
        f = yield self.check(bad_url=self.blackhole(), upstream={"connect_timeout": 0.3})
        self.assertEqual(f["error"], "connect_timeout")

    @defer.inlineCallbacks
    def test_first_byte_timeout(self):
        f = yield self.check(fail="hang", upstream={"first_byte_timeout": 0.3})
        self.assertEqual(f["error"], "first_byte_timeout")
        yield self.wait_for(lambda: self.sims["bad"].lost == 1, what="shard connection closed")

    @defer.inlineCallbacks
    def test_idle_timeout_mid_body(self):
        f = yield self.check(fail="hang_body", upstream={"idle_timeout": 0.3}, expect_items=20)
        self.assertEqual(f["error"], "idle_timeout")
        yield self.wait_for(lambda: self.sims["bad"].lost == 1, what="shard connection closed")

    @defer.inlineCallbacks
    def test_total_timeout_while_dripping(self):
        f = yield self.check(drip=0.05, upstream={"total_timeout": 0.5, "idle_timeout": 5},
                             expect_items=None)
        self.assertEqual(f["error"], "total_timeout")
        self.assertTrue(0 < f["items_delivered"] < 40, f)

    @defer.inlineCallbacks
    def test_non_2xx_status(self):
        f = yield self.check(fail="status", fail_status=503)
        self.assertEqual((f["error"], f["status"]), ("status", 503))

    @defer.inlineCallbacks
    def test_malformed_json_mid_body(self):
        f = yield self.check(fail="garbage", expect_items=20)
        self.assertEqual(f["error"], "malformed_json")
        yield self.wait_for(lambda: self.sims["bad"].lost == 1, what="shard connection closed")

    @defer.inlineCallbacks
    def test_body_cut_mid_way(self):
        f = yield self.check(fail="cut", expect_items=20)
        self.assertEqual(f["error"], "truncated")

    @defer.inlineCallbacks
    def test_connection_closed_without_response(self):
        f = yield self.check(fail="close")
        self.assertIn(f["error"], ("no_response", "truncated"))

    @defer.inlineCallbacks
    def test_every_shard_failed_is_a_502_with_the_errors(self):
        self.shard("a", fail="status")
        self.shard("b", fail="close")
        base = self.gateway()
        r = yield self.fetch(base + "/v3/events")
        self.assertEqual(r.code, 502)
        err = r.json()["error"]
        self.assertEqual(err["code"], "shards_failed")
        self.assertEqual(sorted(failed(err)), ["a", "b"])

    @defer.inlineCallbacks
    def test_every_shard_timed_out_is_a_504(self):
        self.shard("a", fail="hang")
        base = self.gateway(upstream={"first_byte_timeout": 0.2})
        r = yield self.fetch(base + "/v3/events")
        self.assertEqual(r.code, 504)
        self.assertEqual(r.json()["error"]["code"], "shards_timeout")


class RobustnessTests(GatewayTestCase):
    """Failures of the shards' data or of the exchange that must never pass as success."""

    @defer.inlineCallbacks
    def test_a_200_without_the_list_is_a_failure_not_an_empty_shard(self):
        self.shard("ok", items("ok", 3))
        self.shard("odd")
        base = self.gateway(routes=[{"path": "/echo/list", "mode": "scatter",
                                     "items": "data.item"}])
        # ShardSim answers /echo/... with an object that has no "data" list.
        r = yield self.fetch(base + "/echo/list")
        self.assertEqual(r.code, 502)  # nobody produced the list: not an empty 200
        meta = r.json()["error"]["meta"]
        errors = {f["shard"]: f["error"] for f in meta["shards"]["failed"]}
        self.assertEqual(errors, {"ok": "no_list", "odd": "no_list"})

    @defer.inlineCallbacks
    def test_an_item_that_cannot_be_encoded_fails_its_shard_loudly(self):
        deep = {"id": 3, "shard": "bad"}
        node = deep
        for _ in range(300):  # beyond the encoder's nesting limit
            node["x"] = {}
            node = node["x"]
        self.shard("ok", items("ok", 20))
        self.shard("bad", items("bad", 2) + [deep] + items("bad", 6)[3:], batch=1)
        base = self.gateway(server={"item_parser": "python"})
        r = yield self.fetch(base + "/v3/events")
        doc = r.json()
        f = failed(doc)["bad"]
        self.assertEqual(f["error"], "unencodable_item")
        self.assertEqual(f["items_delivered"], len([i for i in doc["data"] if i["shard"] == "bad"]))
        self.assertEqual(len([i for i in doc["data"] if i["shard"] == "ok"]), 20)
        self.flushLoggedErrors()
        if split.NATIVE:  # bytes pass through: nothing is encoded, the deep item arrives whole
            base = self.gateway(server={"item_parser": "native"})
            r = yield self.fetch(base + "/v3/events")
            doc = json.loads(r.body)  # json, not the client's parser: 300 deep
            self.assertEqual(doc["meta"]["shards"]["failed"], [])
            self.assertEqual(len([i for i in doc["data"] if i["shard"] == "bad"]), 6)
            self.assertIn(deep, doc["data"])

    @defer.inlineCallbacks
    def test_conditional_and_range_headers_are_not_sent_to_shards(self):
        self.shard("s1")
        base = self.gateway()
        r = yield self.fetch(base + "/v3/events", headers={"If-None-Match": '"v1"',
                                                          "Range": "bytes=0-10"})
        self.assertEqual(r.code, 200)
        headers = self.sims["s1"].requests[0]["headers"]
        self.assertNotIn("if-none-match", headers)
        self.assertNotIn("range", headers)

    @defer.inlineCallbacks
    def test_every_shard_rejecting_with_the_same_4xx_is_that_4xx(self):
        self.shard("a", fail="status", fail_status=401)
        self.shard("b", fail="status", fail_status=401)
        base = self.gateway()
        r = yield self.fetch(base + "/v3/events")
        self.assertEqual((r.code, r.json()["error"]["code"]), (401, "shards_rejected"))

    @defer.inlineCallbacks
    def test_a_failed_tls_handshake_is_a_tls_error(self):
        from twisted.internet import reactor
        from twisted.internet.protocol import Factory, Protocol

        class Plain(Protocol):  # answers a TLS ClientHello with plain text
            def connectionMade(self):
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                self.transport.loseConnection()

        port = reactor.listenTCP(0, Factory.forProtocol(Plain), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.shard("ok", items("ok", 2))
        base = self.gateway(shards={"ok": self.urls["ok"],
                                    "tls": f"https://127.0.0.1:{port.getHost().port}"})
        r = yield self.fetch(base + "/v3/events")
        self.assertEqual(failed(r.json())["tls"]["error"], "tls_error")
        self.flushLoggedErrors()


class ItemParserChoiceTests(GatewayTestCase):
    """server.item_parser: the start-up log line says which path list items take."""

    def started(self, parser: str | None) -> str:
        from twisted.logger import formatEvent, globalLogPublisher

        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        try:
            self.shard("s1")
            self.gateway(server={"item_parser": parser} if parser else {})
        finally:
            globalLogPublisher.removeObserver(events.append)
        (line,) = [formatEvent(e) for e in events if e.get("event") == "startup"]
        return line

    def test_the_startup_line_names_the_native_splitter_or_ijson(self):
        if split.NATIVE:
            self.assertIn("list items: native splitter", self.started(None))
            self.assertIn("list items: native splitter", self.started("native"))
        self.assertIn(f'list items: ijson {parse.BACKEND} (server.item_parser = "python")'
                      if split.NATIVE else "the native splitter is not built",
                      self.started("python"))

    def test_native_without_the_extension_is_a_config_error_naming_the_key(self):
        from shardstream.core import config as config_mod

        saved = split.NATIVE
        split.NATIVE = False
        self.addCleanup(setattr, split, "NATIVE", saved)
        with self.assertRaises(config_mod.ConfigError) as e:
            config_mod.parse({"server": {"item_parser": "native"},
                              "shards": {"a": {"urls": ["http://127.0.0.1:1"]}},
                              "routes": [{"path": "/x", "mode": "scatter", "items": "item"}]},
                             "gw.toml")
        self.assertIn("gw.toml", str(e.exception))
        self.assertIn("server.item_parser", str(e.exception))
        self.assertIn("not built", str(e.exception))
        self.assertEqual(split.describe("auto"),
                         f"ijson {parse.BACKEND} (the native splitter is not built)")
