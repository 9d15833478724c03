"""Issue 13: the shard directory, placement, targeted lists, every endpoint
reachable, shards added and removed, tenants moved — against real shards."""

from __future__ import annotations

import json
import os

from twisted.internet import defer

from support import GatewayTestCase, free_port, items, temp_dir


def vendor_items(shard, vendors, n=3, **extra):
    """n items per vendor, each with a start time to sort by."""
    out = []
    for v in vendors:
        for i in range(n):
            out.append({"id": len(out) + 1, "shard": shard, "vendor_id": v,
                        "starts_at": f"2026-0{1 + i}-{10 + int(v[1:]) % 20:02d}", **extra})
    return out


EVENTS = {"path": "/v3/events", "mode": "scatter", "items": "data.item", "total": "meta.total",
          "target_param": "vendor_id", "sort": ["starts_at"], "owner_field": "vendor_id"}
BY_VENDOR = {"path": "/v3/vendors/{vendor_id}/events", "mode": "route",
             "shard_key": "vendor_id"}
CREATE = {"path": "/v3/events", "methods": ["POST"], "mode": "route",
          "shard_key_body": "vendor_id", "placement": "hash"}


class DirectoryFileTests(GatewayTestCase):
    def setUp(self):
        super().setUp()
        self.dir = temp_dir(self)
        self.csv = os.path.join(self.dir, "vendors.csv")
        self.config_file = os.path.join(self.dir, "gw.toml")

    def write(self, text):
        with open(self.csv, "w") as f:
            f.write(text)

    def start(self, routes=None, shards=None, **top):
        for name, vendors in (("a", ["v1", "v2"]), ("b", ["v3"]), ("c", ["v4"])):
            self.shard(name, vendor_items(name, vendors))
        return self.gateway(routes=routes or [EVENTS, BY_VENDOR, CREATE],
                            shards=shards, directory={"vendor_id": {"file": self.csv}}, **top)

    @defer.inlineCallbacks
    def test_a_file_names_owners_and_a_reload_reads_it_again(self):
        self.write("key,shard\nv1,a\nv2,a\nv3,b\nv4,c\n")
        base = self.start()
        r = yield self.fetch(base + "/v3/vendors/v3/events")
        self.assertEqual(r.code, 200)
        self.assertEqual({i["shard"] for i in r.json()["data"]}, {"b"})
        self.write("key,shard\nv1,a\nv2,a\nv3,c\nv4,c\n")
        self.assertTrue((yield self.service.reload()))
        r = yield self.fetch(base + "/v3/vendors/v3/events")
        self.assertEqual(r.headers.getRawHeaders("x-shard"), ["c"])

    @defer.inlineCallbacks
    def test_a_bad_file_on_reload_is_rejected_and_the_old_map_serves(self):
        self.write("v1,a\nv3,b\n")
        base = self.start()
        self.write("v1,a\nv3,nosuch\nv4\n")
        self.assertFalse((yield self.service.reload()))
        r = yield self.fetch(base + "/v3/vendors/v3/events")
        self.assertEqual(r.headers.getRawHeaders("x-shard"), ["b"])

    @defer.inlineCallbacks
    def test_a_targeted_list_asks_only_the_owners(self):
        self.write("v1,a\nv2,a\nv3,b\nv4,c\n")
        base = self.start()
        r = yield self.fetch(base + "/v3/events?vendor_id=v3&sort=starts_at")
        doc = r.json()
        self.assertEqual(r.code, 200, doc)
        self.assertEqual({i["vendor_id"] for i in doc["data"]}, {"v3"})
        self.assertEqual(doc["meta"]["shards"]["total"], 1)
        self.assertEqual(doc["meta"]["total"], 3)
        self.assertEqual(self.sims["a"].requests + self.sims["c"].requests, [])
        r = yield self.fetch(base + "/v3/events?vendor_id=v1,v4&limit=2&sort=starts_at")
        doc = r.json()
        self.assertEqual(doc["meta"]["shards"]["total"], 2)
        self.assertEqual(self.sims["b"].requests[1:], [])
        seen = [i["id"] for i in doc["data"]]
        while doc["meta"]["next_cursor"]:  # cursors keep to the same shards
            r = yield self.fetch(base + "/v3/events?cursor=" + doc["meta"]["next_cursor"])
            doc = r.json()
            self.assertEqual(doc["meta"]["shards"]["total"], 2)
            seen += [i["id"] for i in doc["data"]]
        self.assertEqual(len(seen), 6)
        self.assertEqual(len(self.sims["b"].requests), 1)  # only the first, v3-only list

    @defer.inlineCallbacks
    def test_a_key_the_directory_lacks_lists_every_shard(self):
        self.write("v1,a\n")
        base = self.start()
        r = yield self.fetch(base + "/v3/events?vendor_id=v9")
        self.assertEqual(r.json()["meta"]["shards"]["total"], 3)

    @defer.inlineCallbacks
    def test_a_new_tenant_is_placed_by_rendezvous_hash_on_an_open_shard_and_stays(self):
        from shardstream.core.directory import rendezvous

        self.write("v1,a\n")
        self.shard("a", [])
        self.shard("b", [])
        self.shard("closed", [])
        base = self.gateway(routes=[EVENTS, BY_VENDOR, CREATE], directory={
            "vendor_id": {"file": self.csv}}, shards={
            "a": self.urls["a"], "b": {"urls": [self.urls["b"]], "weight": 2.0},
            "closed": {"urls": [self.urls["closed"]], "accepts_new": False}})
        placed = {}
        for n in range(12):
            key = f"new{n}"
            r = yield self.fetch(base + "/v3/events", "POST",
                                 {"content-type": ["application/json"]},
                                 json.dumps({"vendor_id": key, "title": "t"}).encode())
            self.assertEqual(r.code, 201, r.body)
            placed[key] = r.headers.getRawHeaders("x-shard")[0]
            self.assertEqual(placed[key], rendezvous(key, [("a", 1.0), ("b", 2.0)]))
        self.assertNotIn("closed", placed.values())
        self.assertEqual(set(placed.values()), {"a", "b"})
        for key, shard in placed.items():  # every later request goes there
            r = yield self.fetch(base + f"/v3/vendors/{key}/events")
            self.assertEqual(r.headers.getRawHeaders("x-shard"), [shard])
            self.assertEqual(len(r.json()["data"]), 1)

    @defer.inlineCallbacks
    def test_placement_reject_and_a_fixed_shard(self):
        self.write("v1,a\n")
        reject = dict(CREATE, placement="reject")
        base = self.start(routes=[reject])
        r = yield self.fetch(base + "/v3/events", "POST", {}, b'{"vendor_id": "nobody"}')
        self.assertEqual((r.code, r.json()["error"]["code"]), (400, "no_owner"))
        fixed = dict(CREATE, placement="shard:c")
        with open(self.config_file, "w") as f:
            from support import _toml
            f.write(_toml({"server": {"listen": "tcp:0:interface=127.0.0.1"},
                           "shards": {n: {"urls": [u]} for n, u in self.urls.items()},
                           "routes": [fixed, BY_VENDOR],
                           "directory": {"vendor_id": {"file": self.csv}}}))
        self.assertTrue((yield self.service.reload()))
        r = yield self.fetch(base + "/v3/events", "POST", {}, b'{"vendor_id": "nobody"}')
        self.assertEqual((r.code, r.headers.getRawHeaders("x-shard")), (201, ["c"]))

    @defer.inlineCallbacks
    def test_unknown_find_asks_every_shard_and_remembers(self):
        self.write("v1,a\n")
        self.shard("a", [], vendors={"v1": {"id": "v1"}})
        self.shard("b", [], vendors={"v7": {"id": "v7"}})
        base = self.gateway(routes=[{"path": "/v3/vendors/{vendor_id}", "mode": "route",
                                     "shard_key": "vendor_id"}],
                            directory={"vendor_id": {"file": self.csv, "unknown": "find"}})
        r = yield self.fetch(base + "/v3/vendors/v7")
        self.assertEqual((r.code, r.headers.getRawHeaders("x-shard")), (200, ["b"]))
        before = len(self.sims["a"].requests)
        r = yield self.fetch(base + "/v3/vendors/v7")
        self.assertEqual(r.headers.getRawHeaders("x-shard"), ["b"])
        self.assertEqual(len(self.sims["a"].requests), before)  # remembered: b alone

    # -- tenants moved -----------------------------------------------------------------

    @defer.inlineCallbacks
    def test_a_tenant_move_start_to_switch_every_item_exactly_once(self):
        """v1 moves from a to b: the partial copy on b is never listed, writes
        wait, and a partner paging a sorted list across the switch gets every
        item once, each from the shard the directory named at the time."""
        self.write("v1,a\nv2,a\nv3,b\nv4,c\n")
        self.shard("a", vendor_items("a", ["v1", "v2"], n=6))
        self.shard("b", vendor_items("b", ["v3"], n=6))
        self.shard("c", vendor_items("c", ["v4"], n=6))
        base = self.gateway(routes=[EVENTS, BY_VENDOR, CREATE],
                            directory={"vendor_id": {"file": self.csv}})

        def page(url):
            return self.fetch(base + url)

        # The move starts (a>b) and the platform copies v1 to b, with new local ids.
        self.write("v1,a>b\nv2,a\nv3,b\nv4,c\n")
        self.assertTrue((yield self.service.reload()))
        copies = [dict(i, shard="b", id=100 + n) for n, i in
                  enumerate(x for x in self.sims["a"].items if x["vendor_id"] == "v1")]
        self.sims["b"].items += copies[:3]  # a partial copy
        r = yield page("/v3/events?sort=starts_at")
        self.assertEqual([i["shard"] for i in r.json()["data"] if i["vendor_id"] == "v1"],
                         ["a"] * 6)  # the partial copy on b is never listed
        from shardstream.observe.metrics import metrics

        counted = metrics().moving_writes.labels("vendor_id")
        before = counted._value.get()
        r = yield self.fetch(base + "/v3/events", "POST", {}, b'{"vendor_id": "v1"}')
        self.assertEqual((r.code, r.json()["error"]["code"]), (503, "tenant_moving"))
        self.assertEqual(counted._value.get(), before + 1)
        self.assertEqual(r.headers.getRawHeaders("retry-after"), ["2"])
        r = yield self.fetch(base + "/v3/vendors/v1/events")
        self.assertEqual(r.headers.getRawHeaders("x-shard"), ["a"])  # reads: the source
        self.sims["b"].items += copies[3:]  # the copy is complete
        seen = []
        r = yield page("/v3/events?sort=starts_at&limit=5")
        doc = r.json()
        seen += doc["data"]
        r = yield page("/v3/events?cursor=" + doc["meta"]["next_cursor"])
        doc = r.json()
        seen += doc["data"]
        self.write("v1,b\nv2,a\nv3,b\nv4,c\n")  # ops switch
        self.assertTrue((yield self.service.reload()))
        r = yield self.fetch(base + "/v3/vendors/v1/events")
        self.assertEqual(r.headers.getRawHeaders("x-shard"), ["b"])
        while doc["meta"]["next_cursor"]:
            r = yield page("/v3/events?cursor=" + doc["meta"]["next_cursor"])
            self.assertEqual(r.code, 200)
            doc = r.json()
            seen += doc["data"]
        keys = [(i["vendor_id"], i["starts_at"]) for i in seen]
        self.assertEqual(len(keys), len(set(keys)), "an item was listed twice")
        self.assertEqual(len(keys), 24, "an item was never listed")
        self.assertEqual([i["starts_at"] for i in seen], sorted(i["starts_at"] for i in seen))
        v1 = [i["shard"] for i in seen if i["vendor_id"] == "v1"]
        self.assertEqual(v1, sorted(v1), "v1 from a before the switch, from b after it")
        self.assertEqual(set(v1), {"a", "b"})
        r = yield page("/v3/events?sort=starts_at")  # the leftovers on a are never listed
        self.assertEqual({i["shard"] for i in r.json()["data"] if i["vendor_id"] == "v1"},
                         {"b"})
        self.assertEqual(len(r.json()["data"]), 24)
        r = yield self.fetch(base + "/metrics")
        self.assertIn(b'shardstream_foreign_items_dropped_total{route="/v3/events",shard="a"}',
                      r.body)


class EveryEndpointTests(GatewayTestCase):
    REFERENCE = {"prefix": "/echo/", "mode": "any"}  # the shards' echo, as reference data

    @defer.inlineCallbacks
    def test_a_prefix_route_in_any_mode_fails_over_to_another_shard(self):
        self.shard("a")
        self.shard("b")
        base = self.gateway(routes=[self.REFERENCE, EVENTS_PLAIN], shards={
            "dead": f"http://127.0.0.1:{free_port()}", **self.urls})
        answered = set()
        for _ in range(6):
            r = yield self.fetch(base + "/echo/currencies/eur")
            self.assertEqual(r.code, 200, r.body)
            answered |= set(r.headers.getRawHeaders("x-shard"))
            self.assertEqual(r.json()["uri"], "/echo/currencies/eur")
        self.assertEqual(answered, {"a", "b"})  # spread, and the dead one never answers

    @defer.inlineCallbacks
    def test_any_mode_with_every_shard_down_is_502_naming_them(self):
        base = self.gateway(routes=[self.REFERENCE, EVENTS_PLAIN], shards={
            "x": f"http://127.0.0.1:{free_port()}", "y": f"http://127.0.0.1:{free_port()}"})
        r = yield self.fetch(base + "/echo/x")
        self.assertEqual(r.code, 502)
        self.assertEqual({f["shard"] for f in r.json()["error"]["failed"]}, {"x", "y"})

    @defer.inlineCallbacks
    def test_the_fallback_decides_for_a_path_no_route_names(self):
        self.shard("a")
        base = self.gateway(routes=[EVENTS_PLAIN])
        r = yield self.fetch(base + "/echo/x")
        self.assertEqual((r.code, r.json()["error"]["code"]), (404, "not_found"))
        yield self.service.stopService()
        base = self.gateway(routes=[EVENTS_PLAIN], fallback={"mode": "any"})
        r = yield self.fetch(base + "/echo/x?q=1", "POST", {}, b"hello")
        self.assertEqual(r.code, 200)
        self.assertEqual((r.json()["uri"], r.json()["body"]), ("/echo/x?q=1", "hello"))


EVENTS_PLAIN = {"path": "/v3/events", "mode": "scatter", "items": "data.item"}


class ShardSetChangeTests(GatewayTestCase):
    def setUp(self):
        super().setUp()
        self.config_file = os.path.join(temp_dir(self), "gw.toml")

    def rewrite(self, shards):
        from support import _toml

        with open(self.config_file, "w") as f:
            f.write(_toml({"server": {"listen": "tcp:0:interface=127.0.0.1"},
                           "shards": {n: {"urls": [self.urls[n]]} for n in shards},
                           "routes": [dict(EVENTS_PLAIN, sort=["id"])]}))

    @defer.inlineCallbacks
    def test_an_added_shard_joins_a_cursor_chain_from_its_start(self):
        self.shard("a", items("a", 6))
        self.shard("b", items("b", 6))
        self.shard("new", items("new", 4))
        base = self.gateway(routes=[dict(EVENTS_PLAIN, sort=["id"])],
                            shards={"a": self.urls["a"], "b": self.urls["b"]})
        r = yield self.fetch(base + "/v3/events?sort=id&limit=4")
        doc = r.json()
        seen = [(i["shard"], i["id"]) for i in doc["data"]]
        self.rewrite(["a", "b", "new"])
        self.assertTrue((yield self.service.reload()))
        while doc["meta"]["next_cursor"]:
            r = yield self.fetch(base + "/v3/events?cursor=" + doc["meta"]["next_cursor"])
            doc = r.json()
            seen += [(i["shard"], i["id"]) for i in doc["data"]]
        self.assertEqual(len(seen), len(set(seen)))
        self.assertEqual(sorted(seen), sorted([("a", n) for n in range(1, 7)]
                                              + [("b", n) for n in range(1, 7)]
                                              + [("new", n) for n in range(1, 5)]))

    @defer.inlineCallbacks
    def test_a_cursor_naming_a_removed_shard_is_410(self):
        self.shard("a", items("a", 6))
        self.shard("b", items("b", 6))
        base = self.gateway(routes=[dict(EVENTS_PLAIN, sort=["id"])])
        r = yield self.fetch(base + "/v3/events?sort=id&limit=4")
        cursor = r.json()["meta"]["next_cursor"]
        self.rewrite(["a"])
        self.assertTrue((yield self.service.reload()))
        r = yield self.fetch(base + "/v3/events?cursor=" + cursor)
        self.assertEqual((r.code, r.json()["error"]["code"]), (410, "cursor_shard_gone"))
        self.assertIn("start the list again", r.json()["error"]["message"])
