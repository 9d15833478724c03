"""One application across shards, against real loopback shards: ordered merge,
limit push-down, cursors, global ids, routed writes, find mode, totals."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

from twisted.internet import defer

from support import GatewayTestCase, items

EVENTS = {"path": "/v3/events", "methods": ["GET"], "mode": "scatter", "items": "data.item",
          "sort": ["starts_at", "price.amount"], "max_limit": 100, "total": "meta.total",
          "id_fields": ["id"]}
ONE = {"path": "/v3/events/{event_id}", "mode": "route", "global_id": "event_id",
       "id_fields": ["id"]}
CREATE = {"path": "/v3/events", "methods": ["POST"], "mode": "route",
          "shard_key_body": "vendor_id", "id_fields": ["id"], "max_body": 2000}
FIND = {"path": "/v3/vendors/{vendor_id}", "mode": "find", "cache_size": 10, "cache_ttl": 60}
ROUTES = [EVENTS, ONE, CREATE, FIND]
SHARD_MAP = {"vendor_id": {"va": "a", "vb": "b"}}


def events(shard, times, **extra):
    return [{"id": n, "vendor_id": f"v{shard}", "starts_at": t, "shard": shard, **extra}
            for n, t in enumerate(times, start=1)]


def shard_args(sim):
    return [parse_qs(urlsplit(r["uri"]).query) for r in sim.requests]


class OrderedMergeTests(GatewayTestCase):
    def setUp(self):
        super().setUp()
        # Ties across and within shards, a missing key, interleaving times.
        self.shard("a", events("a", ["2027-01-01T10:00Z", "2027-01-02T10:00Z", "2027-01-02T10:00Z"])
                   + [{"id": 9, "shard": "a"}], delay=0.05)
        self.shard("b", events("b", ["2027-01-01T09:00Z", "2027-01-02T10:00Z", "2027-01-03T00:00Z"]))
        self.shard("c", events("c", ["2027-01-02T10:00Z"]), delay=0.1)
        self.base = self.gateway(routes=ROUTES, shard_map=SHARD_MAP)

    @defer.inlineCallbacks
    def test_sorted_across_shards_with_deterministic_ties(self):
        r = yield self.fetch(self.base + "/v3/events?sort=starts_at")
        doc = r.json()
        got = [(i["shard"], i["id"]) for i in doc["data"]]
        self.assertEqual(got, [("b", "b~i1"), ("a", "a~i1"),
                               ("a", "a~i2"), ("a", "a~i3"), ("b", "b~i2"), ("c", "c~i1"),
                               ("b", "b~i3"), ("a", "a~i9")])
        for sim in self.sims.values():
            self.assertEqual(shard_args(sim)[0]["sort"], ["starts_at"])
        self.assertEqual(doc["meta"]["total"], 8)

    @defer.inlineCallbacks
    def test_descending_keeps_missing_last(self):
        r = yield self.fetch(self.base + "/v3/events?sort=-starts_at")
        got = [i["id"] for i in r.json()["data"]]
        self.assertEqual(got, ["b~i3", "a~i2", "a~i3", "b~i2", "c~i1", "a~i1", "b~i1", "a~i9"])

    @defer.inlineCallbacks
    def test_disallowed_sort_is_400_and_no_shard_is_asked(self):
        r = yield self.fetch(self.base + "/v3/events?sort=title")
        self.assertEqual(r.code, 400)
        self.assertIn("cannot sort by 'title'", r.json()["error"]["message"])
        self.assertTrue(all(not s.requests for s in self.sims.values()))


class UnsortedShardTests(GatewayTestCase):
    @defer.inlineCallbacks
    def test_a_shard_that_answers_unsorted_is_reported_not_mis_merged(self):
        self.shard("a", events("a", ["2027-01-01", "2027-01-03", "2027-01-05"]))
        self.shard("b", events("b", ["2027-01-02", "2027-01-06", "2027-01-04"]), ignore_sort=True)
        base = self.gateway(routes=[EVENTS])
        r = yield self.fetch(base + "/v3/events?sort=starts_at")
        doc = r.json()
        times = [i["starts_at"] for i in doc["data"]]
        self.assertEqual(times, sorted(times))
        (f,) = doc["meta"]["shards"]["failed"]
        self.assertEqual((f["shard"], f["error"]), ("b", "unsorted"))
        self.assertEqual([i["starts_at"] for i in doc["data"] if i["shard"] == "a"],
                         ["2027-01-01", "2027-01-03", "2027-01-05"])


class LimitTests(GatewayTestCase):
    @defer.inlineCallbacks
    def test_limit_and_offset_are_pushed_down_and_applied_to_the_merged_list(self):
        for s, start in (("a", 0), ("b", 1), ("c", 2)):
            self.shard(s, events(s, [f"2027-01-{d:02d}" for d in range(start + 1, 30, 3)]))
        base = self.gateway(routes=[EVENTS])
        r = yield self.fetch(base + "/v3/events?sort=starts_at&limit=4&offset=3")
        doc = r.json()
        self.assertEqual([i["starts_at"] for i in doc["data"]],
                         ["2027-01-04", "2027-01-05", "2027-01-06", "2027-01-07"])
        for sim in self.sims.values():
            a = shard_args(sim)[0]
            self.assertEqual(a["limit"], ["7"])  # offset + limit, from each shard's start
            self.assertNotIn("offset", a)

    @defer.inlineCallbacks
    def test_limit_above_max_is_400(self):
        self.shard("a")
        base = self.gateway(routes=[EVENTS])
        r = yield self.fetch(base + "/v3/events?limit=101")
        self.assertEqual(r.code, 400)
        self.assertEqual(self.sims["a"].requests, [])

    @defer.inlineCallbacks
    def test_limit_10_over_100k_items_per_shard_reads_little_and_cancels(self):
        n = 100_000
        for s in ("a", "b", "c"):
            # These shards ignore the limit and would send ~7 MB each.
            self.shard(s, [{"id": i, "starts_at": f"{i:08d}", "shard": s} for i in range(n)],
                       ignore_limit=True, batch=50, drip=0.001)
        # Each shard sorts its 100k items before it answers, all three in this
        # process: on a busy CI machine that took longer than the default 5 s.
        base = self.gateway(routes=[EVENTS], upstream={"first_byte_timeout": 30})
        r = yield self.fetch(base + "/v3/events?sort=starts_at&limit=10")
        self.assertEqual(r.code, 200, r.body)
        doc = r.json()
        self.assertEqual(len(doc["data"]), 10, r.body)
        self.assertIsNotNone(doc["meta"]["next_cursor"])
        full = sum(len(json.dumps(i)) for i in self.sims["a"].items)
        yield self.wait_for(lambda: all(s.lost == 1 for s in self.sims.values()),
                            what="every shard request to be cancelled")
        for sim in self.sims.values():
            self.assertEqual(sim.completed, 0)
            self.assertLess(sim.bytes_sent, full / 100)  # well under 1% of the body


class CursorTests(GatewayTestCase):
    def setUp(self):
        super().setUp()
        # Long runs of equal keys, within and across shards.
        self.shard("a", events("a", ["t1"] * 5 + ["t2"] * 3 + ["t3"]))
        self.shard("b", events("b", ["t1"] * 2 + ["t2"] * 6))
        self.shard("c", events("c", ["t0", "t2", "t2", "t4"] + ["t5"] * 3))
        self.base = self.gateway(routes=[EVENTS])
        self.all = [i for s in self.sims.values() for i in s.items]

    @defer.inlineCallbacks
    def follow(self, first):
        pages, url = [], self.base + first
        while True:
            r = yield self.fetch(url)
            self.assertEqual(r.code, 200, r.body)
            doc = r.json()
            pages.append(doc["data"])
            cursor = doc["meta"]["next_cursor"]
            if cursor is None:
                return pages
            url = self.base + "/v3/events?cursor=" + cursor
            self.assertLess(len(pages), 50)

    @defer.inlineCallbacks
    def test_following_cursors_gives_every_item_once_in_order(self):
        for sort, reverse in (("starts_at", False), ("-starts_at", True)):
            pages = yield self.follow(f"/v3/events?sort={sort}&limit=4")
            got = [i for p in pages for i in p]
            self.assertTrue(all(len(p) <= 4 for p in pages))
            self.assertEqual(len(got), len(self.all))
            self.assertEqual(len({i["id"] for i in got}), len(self.all))
            order = {"a": 0, "b": 1, "c": 2}
            expected = sorted(self.all, key=lambda i: i["starts_at"], reverse=reverse)
            expected = sorted(expected, key=lambda i: (
                [-ord(ch) for ch in i["starts_at"]] if reverse else i["starts_at"],
                order[i["shard"]], i["id"]))
            self.assertEqual([(i["shard"], i["id"]) for i in got],
                             [(i["shard"], f"{i['shard']}~i{i['id']}") for i in expected])

    @defer.inlineCallbacks
    def test_cursor_pages_ask_each_shard_only_for_what_comes_after(self):
        r = yield self.fetch(self.base + "/v3/events?sort=starts_at&limit=4")
        cursor = r.json()["meta"]["next_cursor"]
        for sim in self.sims.values():
            sim.requests.clear()
        yield self.fetch(self.base + "/v3/events?cursor=" + cursor)
        seen = {name: shard_args(sim)[0] for name, sim in self.sims.items()}
        delivered = {"a": 3, "b": 0, "c": 1}  # page 1: c's t0, then a's first three t1
        for name, a in seen.items():
            self.assertEqual(a["limit"], ["4"])
            self.assertEqual(int(a.get("offset", ["0"])[0]), delivered[name])

    @defer.inlineCallbacks
    def test_bad_cursors_are_400(self):
        r = yield self.fetch(self.base + "/v3/events?sort=starts_at&limit=2")
        cursor = r.json()["meta"]["next_cursor"]
        tampered = cursor[:-3] + ("A" if cursor[-3] != "A" else "B") + cursor[-2:]
        for url, code in (("?cursor=" + tampered, "invalid_cursor"),
                          ("?cursor=garbage", "invalid_cursor"),
                          ("?cursor=" + cursor + "&sort=-starts_at", "bad_request"),
                          ("?cursor=" + cursor + "&offset=2", "bad_request")):
            r = yield self.fetch(self.base + "/v3/events" + url)
            self.assertEqual((r.code, r.json()["error"]["code"]), (400, code), url)


class GlobalIdAndWriteTests(GatewayTestCase):
    def setUp(self):
        super().setUp()
        for s in ("a", "b"):
            self.shard(s, events(s, ["2027-01-01", "2027-01-02"]))
        self.base = self.gateway(routes=ROUTES, shard_map=SHARD_MAP)

    @defer.inlineCallbacks
    def test_an_id_from_a_list_can_be_fetched_updated_and_deleted(self):
        r = yield self.fetch(self.base + "/v3/events")
        gid = next(i["id"] for i in r.json()["data"] if i["shard"] == "b" and i["id"].endswith("2"))
        self.assertEqual(gid, "b~i2")
        r = yield self.fetch(self.base + "/v3/events/" + gid)
        self.assertEqual((r.code, r.json()["data"]["id"]), (200, gid))
        self.assertEqual(self.sims["b"].requests[-1]["uri"], "/v3/events/2")
        r = yield self.fetch(self.base + "/v3/events/" + gid, method="PATCH",
                             body=b'{"title":"Renamed","id":"b~i2"}')
        self.assertEqual((r.code, r.json()["data"]["title"]), (200, "Renamed"))
        self.assertEqual(json.loads(self.sims["b"].requests[-1]["body"])["id"], 2)  # local again
        r = yield self.fetch(self.base + "/v3/events/" + gid, method="DELETE")
        self.assertEqual(r.code, 204)
        self.assertEqual([i["id"] for i in self.sims["b"].items], [1])
        self.assertEqual(len(self.sims["a"].items), 2)
        self.assertEqual([q["method"] for q in self.sims["a"].requests], ["GET"])  # the list only

    @defer.inlineCallbacks
    def test_malformed_and_unknown_global_ids(self):
        r = yield self.fetch(self.base + "/v3/events/42")
        self.assertEqual((r.code, r.json()["error"]["code"]), (400, "bad_global_id"))
        r = yield self.fetch(self.base + "/v3/events/zz~i1")
        self.assertEqual((r.code, r.json()["error"]["code"]), (404, "unknown_shard"))
        self.assertEqual([q for s in self.sims.values() for q in s.requests], [])

    @defer.inlineCallbacks
    def test_create_lands_on_the_owner_and_can_be_fetched_back(self):
        for vendor, owner in (("vb", "b"), ("a~rva", "a")):
            body = json.dumps({"vendor_id": vendor, "title": "New tour"}).encode()
            r = yield self.fetch(self.base + "/v3/events", method="POST", body=body,
                                 headers={"Content-Type": "application/json"})
            self.assertEqual(r.code, 201, r.body)
            created = r.json()["data"]
            self.assertEqual(created["id"], f"{owner}~i3")
            self.assertEqual(created["vendor_id"], vendor.split("~r")[-1])  # stored locally
            r = yield self.fetch(self.base + "/v3/events/" + created["id"])
            self.assertEqual(r.json()["data"]["title"], "New tour")
        writes = {n: [q for q in s.requests if q["method"] == "POST"] for n, s in self.sims.items()}
        self.assertEqual({n: len(w) for n, w in writes.items()}, {"a": 1, "b": 1})

    @defer.inlineCallbacks
    def test_a_write_without_an_owner_is_400_and_reaches_no_shard(self):
        for body, field in ((b'{"title":"x"}', "vendor_id"), (b'{"vendor_id":"vz"}', "vz"),
                            (b"[1,2]", "JSON object"), (b"{not json", "not valid JSON")):
            r = yield self.fetch(self.base + "/v3/events", method="POST", body=body)
            self.assertEqual(r.code, 400, body)
            self.assertIn(field, r.json()["error"]["message"])
        r = yield self.fetch(self.base + "/v3/events/a~i1", method="PATCH",
                             body=b'{"id":"b~i1"}')
        self.assertEqual((r.code, r.json()["error"]["code"]), (400, "cross_shard_reference"))
        r = yield self.fetch(self.base + "/v3/events", method="POST",
                             body=json.dumps({"vendor_id": "va", "pad": "x" * 3000}).encode())
        self.assertEqual(r.code, 413)
        self.assertEqual([q for s in self.sims.values() for q in s.requests], [])


class FindTests(GatewayTestCase):
    def setUp(self):
        super().setUp()
        self.shard("a", vendors={"v1": {"id": "v1", "name": "One"}}, delay=0.05)
        self.shard("b", vendors={"v2": {"id": "v2", "name": "Two"}})
        self.shard("c", vendors={}, delay=1.0)
        self.base = self.gateway(routes=[FIND])

    @defer.inlineCallbacks
    def test_first_2xx_wins_the_rest_are_cancelled_and_the_owner_is_remembered(self):
        r = yield self.fetch(self.base + "/v3/vendors/v1")
        self.assertEqual((r.code, r.json()["data"]["name"]), (200, "One"))
        yield self.wait_for(lambda: self.sims["c"].requests and True, what="c asked")
        self.assertEqual(len(self.sims["c"].requests), 1)
        # c was still thinking (1 s): the gateway did not wait for it.
        yield self.fetch(self.base + "/v3/vendors/v1")
        self.assertEqual([len(s.requests) for s in self.sims.values()], [2, 1, 1])

    @defer.inlineCallbacks
    def test_404_only_when_every_shard_says_404(self):
        r = yield self.fetch(self.base + "/v3/vendors/v9")
        self.assertEqual((r.code, r.json()["error"]["code"]), (404, "not_found"))
        self.assertEqual([len(s.requests) for s in self.sims.values()], [1, 1, 1])

    @defer.inlineCallbacks
    def test_a_remembered_owner_that_lost_the_item_triggers_a_new_search(self):
        yield self.fetch(self.base + "/v3/vendors/v2")
        self.sims["a"].vendors["v2"] = self.sims["b"].vendors.pop("v2")  # it moved
        r = yield self.fetch(self.base + "/v3/vendors/v2")
        self.assertEqual(r.code, 200)
        # b (remembered) said 404, so every shard was asked again; a has it now.
        counts = [len(s.requests) for s in self.sims.values()]
        self.assertEqual(counts[:2], [2, 3])  # c may be cancelled before its request lands


class FindFailureTests(GatewayTestCase):
    @defer.inlineCallbacks
    def test_502_when_none_has_it_and_some_failed(self):
        self.shard("a", vendors={})
        self.shard("b", fail="status")
        base = self.gateway(routes=[FIND])
        r = yield self.fetch(base + "/v3/vendors/v1")
        self.assertEqual(r.code, 502)
        err = r.json()["error"]
        self.assertEqual((err["not_found"], err["failed"][0]["shard"]), (["a"], "b"))


class TotalTests(GatewayTestCase):
    @defer.inlineCallbacks
    def test_totals_are_summed_and_failed_shards_named(self):
        self.shard("a", items("a", 7))
        self.shard("b", items("b", 5))
        self.shard("c", fail="status")
        base = self.gateway(routes=[dict(EVENTS, id_fields=[])])
        r = yield self.fetch(base + "/v3/events?limit=3")
        meta = r.json()["meta"]
        self.assertEqual((meta["total"], meta["total_excludes"]), (12, ["c"]))
        self.assertEqual(meta["shards"]["failed"][0]["shard"], "c")


class ReviewRegressionTests(GatewayTestCase):
    @defer.inlineCallbacks
    def test_a_huge_integer_in_an_item_passes_through_exactly(self):
        big = int("7" * 6000)
        self.shard("a", [{"id": 1, "shard": "a", "n": big}])
        self.shard("b", items("b", 3))
        base = self.gateway(routes=[EVENTS])
        r = yield self.fetch(base + "/v3/events")
        self.assertIn(b'"n":' + b"7" * 6000, r.body)
        self.assertEqual(r.json()["meta"]["shards"]["failed"], [])

    @defer.inlineCallbacks
    def test_a_page_with_totals_over_streaming_shards_ends_promptly(self):
        for s in ("a", "b"):
            self.shard(s, events(s, [f"t{i:04d}" for i in range(400)]), batch=5, drip=0.0005)
        base = self.gateway(routes=[dict(EVENTS, max_limit=500)], upstream={"total_timeout": 5})
        r = yield self.fetch(base + "/v3/events?sort=starts_at&limit=300")
        meta = r.json()["meta"]
        self.assertEqual(meta["shards"]["failed"], [])
        self.assertEqual(meta["total"], 800)
        self.assertEqual(len(r.json()["data"]), 300)

    @defer.inlineCallbacks
    def test_dot_segments_never_reach_a_shard(self):
        self.shard("a")
        self.shard("b")
        base = self.gateway(routes=ROUTES, shard_map=SHARD_MAP)
        r = yield self.fetch(base + "/v3/events/a~r..", method="DELETE")
        self.assertEqual(r.code, 404)  # the shard was asked for item "%2E%2E", not its parent
        self.assertEqual(self.sims["a"].requests[-1]["uri"], "/v3/events/%2E%2E")
        r = yield self.fetch(base + "/v3/vendors/..")
        self.assertEqual(r.code, 400)

    @defer.inlineCallbacks
    def test_ids_are_rewritten_even_when_the_client_accepts_gzip(self):
        from twisted.internet import reactor
        from twisted.web.resource import EncodingResourceWrapper
        from twisted.web.server import GzipEncoderFactory

        from shardstream.web.site import TrackingSite
        from shardstream.demo.shardsim import ShardSim

        sim = ShardSim("a", events("a", ["t1", "t2"]))
        site = TrackingSite(EncodingResourceWrapper(sim, [GzipEncoderFactory()]))
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self._sites.append(site)
        base = self.gateway(routes=[ONE], shards={"a": f"http://127.0.0.1:{port.getHost().port}"})
        r = yield self.fetch(base + "/v3/events/a~i2", headers={"Accept-Encoding": "gzip"})
        self.assertEqual((r.code, r.json()["data"]["id"]), (200, "a~i2"))

    @defer.inlineCallbacks
    def test_a_cursor_keeps_the_filters_of_its_list(self):
        self.shard("a", events("a", [f"t{i}" for i in range(6)]) +
                   [dict(e, vendor_id="vx") for e in events("a", [f"u{i}" for i in range(6)])])
        base = self.gateway(routes=[EVENTS])
        r = yield self.fetch(base + "/v3/events?vendor_id=va&sort=starts_at&limit=4")
        first = r.json()
        r = yield self.fetch(base + "/v3/events?cursor=" + first["meta"]["next_cursor"])
        second = r.json()
        self.assertEqual({e["vendor_id"] for e in first["data"] + second["data"]}, {"va"})
        self.assertEqual(len(first["data"] + second["data"]), 6)
        self.assertIsNone(second["meta"]["next_cursor"])
