"""Request ids and trace context followed from the client to every shard and
back, on success and on every kind of error."""

from __future__ import annotations

import re

from twisted.internet import defer

from support import GatewayTestCase, free_port

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"


class TracingTests(GatewayTestCase):
    def routes(self):
        return [{"path": "/v3/events", "mode": "scatter", "items": "data.item"},
                {"path": "/v3/events/{event_id}", "mode": "route", "global_id": "event_id"},
                {"path": "/v3/vendors/{vendor_id}", "mode": "find"}]

    @defer.inlineCallbacks
    def test_a_well_formed_id_and_traceparent_reach_every_shard_and_come_back(self):
        self.shard("a")
        self.shard("b")
        base = self.gateway(routes=self.routes())
        r = yield self.fetch(base + "/v3/events", headers={
            "X-Request-ID": "partner-42", "traceparent": f"00-{TRACE}-{PARENT}-01",
            "tracestate": "vendor=opaque"})
        self.assertEqual(r.code, 200)
        self.assertEqual(r.headers.getRawHeaders(b"x-request-id"), [b"partner-42"])
        parents = set()
        for sim in self.sims.values():
            (req,) = sim.requests
            self.assertEqual(req["headers"]["x-request-id"], ["partner-42"])
            self.assertEqual(req["headers"]["tracestate"], ["vendor=opaque"])
            (traceparent,) = req["headers"]["traceparent"]
            version, trace, parent, flags = traceparent.split("-")
            self.assertEqual((version, trace, flags), ("00", TRACE, "01"))
            self.assertNotEqual(parent, PARENT)
            parents.add(parent)
        self.assertEqual(len(parents), 2)  # a span of its own for each shard request

    @defer.inlineCallbacks
    def test_a_retry_on_another_replica_is_a_span_of_its_own(self):
        self.shard("busy", fail="status", fail_status=503)  # a replica that sheds load
        self.shard("ok")
        base = self.gateway(routes=self.routes(), shards={
            "a": {"urls": [self.urls["busy"], self.urls["ok"]]}})
        for n in range(8):  # until one request met the busy replica first
            r = yield self.fetch(base + "/v3/events", headers={
                "X-Request-ID": f"retry-{n}", "traceparent": f"00-{TRACE}-{PARENT}-01"})
            self.assertEqual(r.code, 200)
            tried = [req for sim in (self.sims["busy"], self.sims["ok"]) for req in sim.requests
                     if req["headers"]["x-request-id"] == [f"retry-{n}"]]
            if len(tried) == 2:
                break
        else:
            self.fail("no request was retried")
        parents = {req["headers"]["traceparent"][0].split("-")[2] for req in tried}
        traces = {req["headers"]["traceparent"][0].split("-")[1] for req in tried}
        self.assertEqual(traces, {TRACE})
        self.assertEqual(len(parents), 2)
        self.assertNotIn(PARENT, parents)

    @defer.inlineCallbacks
    def test_without_a_usable_id_or_traceparent_the_gateway_makes_them(self):
        self.shard("a")
        base = self.gateway(routes=self.routes())
        r = yield self.fetch(base + "/v3/events", headers={"X-Request-ID": "has space",
                                                           "traceparent": "00-nonsense"})
        (rid,) = r.headers.getRawHeaders(b"x-request-id")
        self.assertRegex(rid.decode(), r"^[0-9a-f]{32}$")
        (req,) = self.sims["a"].requests
        self.assertEqual(req["headers"]["x-request-id"], [rid.decode()])
        self.assertRegex(req["headers"]["traceparent"][0], r"^00-[0-9a-f]{32}-[0-9a-f]{16}-01$")
        r2 = yield self.fetch(base + "/v3/events")
        self.assertNotEqual(r2.headers.getRawHeaders(b"x-request-id"), [rid])

    @defer.inlineCallbacks
    def test_every_answer_carries_the_request_id_errors_included(self):
        self.shard("a")
        base = self.gateway(routes=self.routes(), shards={
            "a": self.urls["a"], "dead": f"http://127.0.0.1:{free_port()}"})
        cases = [
            ("/nowhere", 404),  # no route
            ("/v3/events?limit=x", 400),  # a bad list parameter
            ("/v3/events/dead~i1", 502),  # route mode: the owner refuses connections
            ("/v3/events/a~i1", 200),  # relayed from the shard
            ("/v3/vendors/nobody", 404),  # find: no shard has it (one failed)
            ("/readyz", 200),
            ("/livez", 200),
        ]
        for n, (path, status) in enumerate(cases):
            r = yield self.fetch(base + path, headers={"X-Request-ID": f"case-{n}"})
            if path == "/v3/vendors/nobody":
                status = 502  # the dead shard failed, so "not found" cannot be said
            self.assertEqual((path, r.code), (path, status))
            self.assertEqual(r.headers.getRawHeaders(b"x-request-id"), [f"case-{n}".encode()],
                             path)
        self.assertTrue(all(re.fullmatch(r"case-\d", req["headers"]["x-request-id"][0])
                            for req in self.sims["a"].requests))
