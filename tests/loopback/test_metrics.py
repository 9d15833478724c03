"""/metrics over real HTTP, and the admin endpoint on its own listener.

The metrics are process-wide (one registry per process, as in production),
so each test compares values before and after its own requests."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from support import GatewayTestCase, free_port, items, metric_samples, raw_connect


def value(scrape: dict, name: str, **labels: str) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


class _Scraping(GatewayTestCase):
    @defer.inlineCallbacks
    def scrape(self, base: str) -> Any:
        r = yield self.fetch(base + "/metrics")
        self.assertEqual(r.code, 200)
        self.assertTrue(r.headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain"))
        return metric_samples(r.body.decode())


class MetricsTests(_Scraping):
    @defer.inlineCallbacks
    def test_requests_items_and_shard_failures_are_counted_as_the_client_saw_them(self):
        self.shard("a", items("a", 7))
        self.shard("b", items("b", 3))
        dead = f"http://127.0.0.1:{free_port()}"
        base = self.gateway(shards={"a": self.urls["a"], "b": self.urls["b"], "c": dead},
                            upstream={"retries": 0})
        route = "/v3/events"
        before = yield self.scrape(base)
        seen_items, seen_failed = 0, []
        for _ in range(4):
            r = yield self.fetch(base + "/v3/events")
            self.assertEqual(r.code, 200)
            doc = r.json()
            seen_items += len(doc["data"])
            seen_failed += [(f["shard"], f["error"]) for f in doc["meta"]["shards"]["failed"]]
        r = yield self.fetch(base + "/nowhere/42")
        self.assertEqual(r.code, 404)
        after = yield self.scrape(base)

        def delta(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        self.assertEqual(delta("shardstream_requests_total", route=route, method="GET",
                               code="2xx"), 4)
        # the 404's path is not a label: it counts as "unmatched"
        self.assertEqual(delta("shardstream_requests_total", route="unmatched", method="GET",
                               code="4xx"), 1)
        self.assertFalse([k for k in after if "/nowhere/42" in str(k)])
        self.assertEqual(delta("shardstream_time_to_first_item_seconds_count", route=route), 4)
        self.assertEqual(delta("shardstream_request_duration_seconds_count", route=route), 4)
        self.assertGreater(delta("shardstream_response_bytes_total", route=route), 0)
        self.assertEqual(seen_items, 40)
        self.assertEqual(delta("shardstream_shard_items_total", shard="a")
                         + delta("shardstream_shard_items_total", shard="b"), seen_items)
        self.assertEqual(seen_failed, [("c", "connect_refused")] * 4)
        self.assertEqual(delta("shardstream_shard_failures_total", shard="c",
                               error="connect_refused"), 4)
        self.assertEqual(delta("shardstream_shard_attempts_total", shard="a", outcome="ok"), 4)
        self.assertEqual(delta("shardstream_shard_attempts_total", shard="c",
                               outcome="connect_refused"), 4)
        self.assertEqual(delta("shardstream_shard_response_headers_seconds_count", shard="a"), 4)
        self.assertEqual(value(after, "shardstream_streams_in_flight", route=route), 0)
        self.assertEqual(value(after, "shardstream_replica_available", shard="a", replica="0"), 1)
        self.assertEqual(value(after, "shardstream_config_generation"), 1)

    @defer.inlineCallbacks
    def test_retries_ejections_and_replica_state(self):
        self.shard("a")
        dead = f"http://127.0.0.1:{free_port()}"
        base = self.gateway(shards={"a": [dead, self.urls["a"]]},
                            outlier={"consecutive_failures": 1, "base_ejection": 30.0,
                                     "max_ejection": 30.0})
        before = yield self.scrape(base)
        for _ in range(3):
            r = yield self.fetch(base + "/v3/events")
            self.assertEqual((r.code, r.json()["meta"]["shards"]["failed"]), (200, []))
        after = yield self.scrape(base)
        # the dead replica was tried once (retried on the live one), then ejected
        self.assertEqual(value(after, "shardstream_shard_attempts_total", shard="a",
                               outcome="retried")
                         - value(before, "shardstream_shard_attempts_total", shard="a",
                                 outcome="retried"), 1)
        self.assertEqual(value(after, "shardstream_replica_ejections_total", shard="a",
                               replica="0")
                         - value(before, "shardstream_replica_ejections_total", shard="a",
                                 replica="0"), 1)
        self.assertEqual(value(after, "shardstream_replica_available", shard="a", replica="0"), 0)
        self.assertEqual(value(after, "shardstream_replica_available", shard="a", replica="1"), 1)

    @defer.inlineCallbacks
    def test_health_check_results_are_counted(self):
        self.shard("a")
        base = self.gateway(health={"path": "/healthz", "interval": 0.05, "timeout": 0.04})
        before = yield self.scrape(base)
        yield self.wait_for(lambda: len(self.sims["a"].requests) >= 3, what="three checks")
        after = yield self.scrape(base)
        self.assertGreaterEqual(
            value(after, "shardstream_health_checks_total", shard="a", replica="0", result="ok")
            - value(before, "shardstream_health_checks_total", shard="a", replica="0",
                    result="ok"), 2)


class RecordEndTests(_Scraping):
    """Every request's record ends, however the request ends: the in-flight
    gauge comes back to zero and the request is counted once."""

    @defer.inlineCallbacks
    def test_a_client_that_leaves_a_413_a_head_and_a_strict_cut_are_each_counted_once(self):
        self.shard("slow", items("slow", 60), drip=0.05)  # three seconds of body
        base = self.gateway(shards={"slow": self.urls["slow"]}, server={"max_body": 100},
                            routes=[{"path": "/v3/events", "mode": "scatter",
                                     "items": "data.item"},
                                    {"path": "/v3/events/{event_id}", "mode": "route",
                                     "global_id": "event_id"}])
        route = "/v3/events"
        before = yield self.scrape(base)
        port = self.service.address.port
        client = yield raw_connect(port)
        client.transport.write(b"GET /v3/events HTTP/1.1\r\nHost: x\r\n\r\n")
        yield client.got_data
        mid = yield self.scrape(base)
        self.assertEqual(value(mid, "shardstream_streams_in_flight", route=route), 1)
        client.transport.abortConnection()  # the client leaves mid-list
        yield client.closed
        r = yield self.fetch(base + "/v3/events/slow~1", method="PUT", body=b"x" * 1000)
        self.assertEqual(r.code, 413)
        r = yield self.fetch(base + "/readyz", method="HEAD")
        self.assertEqual(r.code, 200)
        after = yield self.scrape(base)

        def delta(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        self.assertEqual(value(after, "shardstream_streams_in_flight", route=route), 0)
        self.assertEqual(delta("shardstream_requests_total", route=route, method="GET",
                               code="client_gone"), 1)
        self.assertEqual(delta("shardstream_requests_total", route="/v3/events/{event_id}",
                               method="PUT", code="4xx"), 1)
        self.assertEqual(delta("shardstream_requests_total", route="admin", method="HEAD",
                               code="2xx"), 1)
        # nothing counted as a success that was not one
        self.assertEqual(delta("shardstream_requests_total", route=route, method="GET",
                               code="2xx"), 0)

    @defer.inlineCallbacks
    def test_a_strict_list_cut_after_its_start_counts_as_aborted_and_its_shard_failure(self):
        self.shard("a", items("a", 40), drip=0.01)
        self.shard("cut", items("cut", 40), drip=0.01, fail="cut")
        base = self.gateway()
        before = yield self.scrape(base)
        client = yield raw_connect(self.service.address.port)
        client.transport.write(b"GET /v3/events?partial=false HTTP/1.1\r\nHost: x\r\n\r\n")
        yield client.closed  # the gateway aborts: a cut list never looks complete
        yield self.wait_for(lambda: True)
        after = yield self.scrape(base)
        route = "/v3/events"
        self.assertEqual(value(after, "shardstream_requests_total", route=route, method="GET",
                               code="aborted")
                         - value(before, "shardstream_requests_total", route=route,
                                 method="GET", code="aborted"), 1)
        self.assertEqual(value(after, "shardstream_streams_in_flight", route=route), 0)
        self.assertEqual(value(after, "shardstream_shard_failures_total", shard="cut",
                               error="truncated")
                         - value(before, "shardstream_shard_failures_total", shard="cut",
                                 error="truncated"), 1)

    @defer.inlineCallbacks
    def test_a_method_no_one_knows_is_no_new_series(self):
        self.shard("a")
        base = self.gateway()
        for method in ("X0", "X1"):
            yield self.fetch(base + "/v3/events", method=method)
        after = yield self.scrape(base)
        self.assertFalse([k for k in after if ("method", "X0") in k[1]])
        self.assertGreaterEqual(sum(v for (name, labels), v in after.items()
                                    if name == "shardstream_requests_total"
                                    and ("method", "other") in labels), 2)


class AdminEndpointTests(GatewayTestCase):
    @defer.inlineCallbacks
    def test_admin_listen_serves_the_admin_paths_there_and_not_on_the_main_endpoint(self):
        self.shard("a")
        base = self.gateway(admin={"listen": "tcp:0:interface=127.0.0.1"})
        admin = f"http://127.0.0.1:{self.service.admin_port.getHost().port}"
        for path in ("/livez", "/readyz", "/healthz", "/metrics"):
            r = yield self.fetch(admin + path)
            self.assertEqual(r.code, 200, path)
            self.assertEqual(r.headers.getRawHeaders("server"), ["shardstream"])  # no versions
            r = yield self.fetch(base + path)  # routed like any other path: no such route
            self.assertEqual((r.code, r.json()["error"]["code"]), (404, "not_found"), path)
        r = yield self.fetch(admin + "/v3/events")  # no partner traffic on the admin endpoint
        self.assertEqual(r.code, 404)
        self.assertEqual(r.headers.getRawHeaders("server"), ["shardstream"])
        r = yield self.fetch(admin + "/metrics", method="POST")
        self.assertEqual(r.code, 405)
        r = yield self.fetch(base + "/v3/events")
        self.assertEqual(r.code, 200)
        self.service.site.resource.draining = True  # what SIGTERM does first
        r = yield self.fetch(admin + "/readyz")
        self.assertEqual((r.code, r.json()["status"]), (503, "not_ready"))


class ShippedRulesTests(GatewayTestCase):
    @defer.inlineCallbacks
    def test_the_shipped_scrape_config_and_alert_rules_name_real_metrics(self):
        import re
        from pathlib import Path

        import yaml

        etc = Path(__file__).resolve().parents[2] / "etc" / "prometheus"
        scrape = yaml.safe_load((etc / "scrape.yml").read_text())
        self.assertEqual(scrape["scrape_configs"][0]["metrics_path"], "/metrics")
        self.assertEqual(scrape["rule_files"], ["shardstream-rules.yml"])
        rules = yaml.safe_load((etc / "shardstream-rules.yml").read_text())["groups"][0]["rules"]
        self.assertEqual(len(rules), 3)
        self.shard("a")
        base = self.gateway(shards={"a": self.urls["a"], "b": f"http://127.0.0.1:{free_port()}"})
        yield self.fetch(base + "/v3/events")  # every labelled series exists now
        r = yield self.fetch(base + "/metrics")
        exposed = {name for name, _ in metric_samples(r.body.decode())}
        for rule in rules:
            names = set(re.findall(r"shardstream_[a-z_]+", rule["expr"]))
            self.assertTrue(names, rule["alert"])
            self.assertLessEqual(names, exposed, rule["alert"])


class UnixSocketTests(_Scraping):
    @defer.inlineCallbacks
    def test_a_unix_socket_client_is_answered_and_logged_without_a_host(self):
        import os
        import tempfile

        from twisted.internet import reactor
        from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
        from twisted.logger import globalLogPublisher

        from support import RawClient

        self.shard("a")
        path = os.path.join(tempfile.mkdtemp(), "gw.sock")
        self.gateway(server={"listen": f"unix:{path}"})
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        client = RawClient()
        yield connectProtocol(UNIXClientEndpoint(reactor, path), client)
        request = b"GET /v3/events HTTP/1.1\r\nHost: x\r\n\r\n"
        client.transport.write(request + request)  # two on one connection
        yield self.wait_for(lambda: client.received.count(b'"succeeded":1') == 2,
                            what="both answers")
        client.transport.loseConnection()
        access = [e for e in events if e.get("event") == "access"]
        self.assertEqual([(e["client"], e["status"]) for e in access], [("-", 200)] * 2)
        self.assertFalse([e for e in events if e.get("log_failure") is not None])
