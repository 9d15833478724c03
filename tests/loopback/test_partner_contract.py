"""What a partner's client relies on, over real loopback shards: the
``complete`` flag, no spinning through empty pages (503 with the same
cursor), and the demo shards' fault on request."""

from __future__ import annotations

import json
from urllib.parse import quote

from twisted.internet import defer

from support import GatewayTestCase, items

EVENTS = {"path": "/v3/events", "methods": ["GET"], "mode": "scatter", "items": "data.item",
          "sort": ["id"], "max_limit": 100, "total": "meta.total", "id_fields": ["id"]}
NDJSON = {"Accept": "application/x-ndjson"}


class CompleteFlagTests(GatewayTestCase):
    @defer.inlineCallbacks
    def test_complete_is_true_only_when_every_shard_succeeded_in_both_formats(self):
        self.shard("a", items("a", 4))
        self.shard("b", items("b", 6), fail="cut")
        base = self.gateway(routes=[EVENTS])
        r = yield self.fetch(base + "/v3/events")
        meta = r.json()["meta"]
        self.assertIs(meta["complete"], False)
        self.assertEqual([f["shard"] for f in meta["shards"]["failed"]], ["b"])
        r = yield self.fetch(base + "/v3/events", headers=NDJSON)
        last = json.loads(r.body.splitlines()[-1])
        self.assertEqual(set(last), {"meta"})
        self.assertIs(last["meta"]["complete"], False)
        self.sims["b"].fail = None
        for headers in ({}, NDJSON):
            r = yield self.fetch(base + "/v3/events?limit=3", headers=headers)
            meta = json.loads(r.body.splitlines()[-1])["meta"] if headers else r.json()["meta"]
            self.assertIs(meta["complete"], True)  # cut by the requested limit only
            self.assertIsNotNone(meta["next_cursor"])


class EmptyPageTests(GatewayTestCase):
    @defer.inlineCallbacks
    def test_an_empty_page_of_failed_shards_is_a_503_with_the_same_cursor_to_retry(self):
        self.shard("a", items("a", 5))
        self.shard("b", items("b", 5), fail="status")
        base = self.gateway(routes=[EVENTS], outlier={"consecutive_failures": 100})
        r = yield self.fetch(base + "/v3/events?sort=id&limit=10")
        self.assertEqual(r.code, 200)  # a page with items: as before
        doc = r.json()
        self.assertEqual(len(doc["data"]), 5)
        self.assertIs(doc["meta"]["complete"], False)
        cursor = doc["meta"]["next_cursor"]
        self.assertIsNotNone(cursor)  # b's items are still to come
        for _ in range(3):  # the same answer every time: a client backs off, it never spins
            r = yield self.fetch(base + "/v3/events?cursor=" + quote(cursor))
            self.assertEqual(r.code, 503)
            self.assertEqual(r.headers.getRawHeaders(b"retry-after"), [b"1"])
            error = r.json()["error"]
            self.assertEqual(error["code"], "shards_unavailable")
            self.assertEqual(error["cursor"], cursor)
            self.assertEqual([f["shard"] for f in error["meta"]["shards"]["failed"]], ["b"])
            self.assertNotIn("next_cursor", error["meta"])
        self.sims["b"].fail = None  # b is back: the same cursor gets its items, then the end
        r = yield self.fetch(base + "/v3/events?cursor=" + quote(cursor))
        self.assertEqual(r.code, 200)
        doc = r.json()
        self.assertEqual([i["id"] for i in doc["data"]], [f"b~i{n}" for n in range(1, 6)])
        self.assertEqual((doc["meta"]["complete"], doc["meta"]["next_cursor"]), (True, None))

    @defer.inlineCallbacks
    def test_a_first_page_with_nothing_but_a_failed_shard_is_a_503_with_a_cursor(self):
        self.shard("a", [])
        self.shard("b", items("b", 3), fail="status")
        base = self.gateway(routes=[EVENTS])
        r = yield self.fetch(base + "/v3/events?sort=id&limit=2")
        self.assertEqual(r.code, 503)
        cursor = r.json()["error"]["cursor"]
        self.sims["b"].fail = None
        r = yield self.fetch(base + "/v3/events?cursor=" + quote(cursor))
        self.assertEqual([i["id"] for i in r.json()["data"]], ["b~i1", "b~i2"])

    @defer.inlineCallbacks
    def test_every_shard_failing_is_still_a_502(self):
        self.shard("a", fail="status")
        self.shard("b", fail="status")
        base = self.gateway(routes=[EVENTS])
        r = yield self.fetch(base + "/v3/events")
        self.assertEqual((r.code, r.json()["error"]["code"]), (502, "shards_failed"))
        self.assertEqual(set(r.json()["error"]["meta"]), {"shards"})


class QueryTests(GatewayTestCase):
    @defer.inlineCallbacks
    def test_any_percent_escape_in_a_targeted_lists_query_is_passed_on(self):
        """Found by the fuzz test: %C2%80 broke the targets' parse (a 500)."""
        self.shard("a", items("a", 2))
        base = self.gateway(routes=[dict(EVENTS, target_param="vendor_id")],
                            shard_map={"vendor_id": {"v1": "a"}})
        r = yield self.fetch(base + "/v3/events?x=%C2%80")
        self.assertEqual((r.code, len(r.json()["data"])), (200, 2))
        r = yield self.fetch(base + "/v3/events?vendor_id=%FF")
        self.assertEqual((r.code, r.json()["error"]["code"]), (400, "bad_request"))


class DemoFaultTests(GatewayTestCase):
    @defer.inlineCallbacks
    def test_a_demo_shard_fails_when_the_query_asks_it_to(self):
        self.shard("a", items("a", 10))
        self.shard("b", items("b", 10))
        base = self.gateway()
        r = yield self.fetch(base + "/v3/events?demo_fail=b")
        failed = r.json()["meta"]["shards"]["failed"]
        self.assertEqual([(f["shard"], f["error"], f["items_delivered"]) for f in failed],
                         [("b", "truncated", 5)])
        r = yield self.fetch(base + "/v3/events?demo_fail=a:status")
        failed = r.json()["meta"]["shards"]["failed"]
        self.assertEqual([(f["shard"], f["status"]) for f in failed], [("a", 500)])
        r = yield self.fetch(base + "/v3/events?demo_fail=nosuch")
        self.assertIs(r.json()["meta"]["complete"], True)


class RecoveringShardTests(GatewayTestCase):
    @defer.inlineCallbacks
    def test_fail_first_strikes_only_the_first_requests(self):
        self.shard("a", items("a", 4), fail="status", fail_first=1)
        base = self.gateway()
        r = yield self.fetch(base + "/v3/events")
        self.assertEqual(r.code, 502)
        r = yield self.fetch(base + "/v3/events")
        self.assertEqual((r.code, len(r.json()["data"])), (200, 4))
