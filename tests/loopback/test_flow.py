"""Client disconnects and slow clients, produced for real over loopback."""

from __future__ import annotations

import json

from twisted.internet import defer, reactor, task

from support import GatewayTestCase, items, raw_connect

GET = b"GET %s HTTP/1.1\r\nHost: test\r\n\r\n"


class DisconnectTests(GatewayTestCase):
    @defer.inlineCallbacks
    def disconnect_after(self, wait_for_data: bool, abort: bool, **shard):
        for name in ("a", "b", "c"):
            self.shard(name, items(name, 1000), **shard)
        base = self.gateway()
        client = yield raw_connect(self.service.address.port)
        client.transport.write(GET % b"/v3/events")
        if wait_for_data:
            yield client.got_data
        else:  # every shard request is under way, none has answered yet
            yield self.wait_for(lambda: all(s.requests for s in self.sims.values()))
        if abort:
            client.transport.abortConnection()
        else:
            client.transport.loseConnection()
        # Each shard sees its connection closed long before its body would end (10 s).
        yield self.wait_for(
            lambda: all(s.lost >= 1 for s in self.sims.values()), timeout=8.0,
            what="every shard to see its connection closed")
        self.assertTrue(all(s.completed == 0 for s in self.sims.values()))
        self.assertEqual(base[:7], "http://")

    def test_reset_mid_stream_closes_every_shard_connection(self):
        return self.disconnect_after(wait_for_data=True, abort=True, drip=0.01)

    def test_clean_close_mid_stream_closes_every_shard_connection(self):
        return self.disconnect_after(wait_for_data=True, abort=False, drip=0.01)

    def test_disconnect_before_any_shard_answered(self):
        return self.disconnect_after(wait_for_data=False, abort=True, delay=10.0)

    @defer.inlineCallbacks
    def test_disconnect_from_a_routed_request_closes_the_shard_connection(self):
        self.shard("s1", items("s1", 400, vendor_id="v1"), drip=0.01)
        self.gateway(routes=[{"path": "/v3/vendors/{vendor_id}/events", "mode": "route",
                              "shard_key": "vendor_id"}],
                     shard_map={"vendor_id": {"v1": "s1"}})
        client = yield raw_connect(self.service.address.port)
        client.transport.write(b"GET /v3/vendors/v1/events HTTP/1.1\r\nHost: t\r\n\r\n")
        yield client.got_data
        client.transport.abortConnection()
        yield self.wait_for(lambda: self.sims["s1"].lost == 1, timeout=2.0,
                            what="the shard to see its connection closed")


class SlowClientTests(GatewayTestCase):
    @defer.inlineCallbacks
    def test_a_client_that_stops_reading_pauses_the_shards(self):
        n = 250_000  # ~30 MB: more than all the socket buffers on the way can hold
        self.shard("big", items("big", n, pad="x" * 60))
        self.gateway()
        client = yield raw_connect(self.service.address.port)
        client.transport.pauseProducing()  # the client reads nothing
        client.transport.write(GET % b"/v3/events")
        sim = self.sims["big"]
        yield self.wait_for(lambda: sim.bytes_sent > 0, what="the shard to start")
        # Wait until the shard cannot send any more: everything on the way is full.
        last = -1
        while sim.bytes_sent != last:
            last = sim.bytes_sent
            yield task.deferLater(reactor, 0.3, lambda: None)
        self.assertEqual(sim.completed, 0)
        self.assertLess(sim.bytes_sent, 0.9 * sum(len(json.dumps(i)) for i in sim.items))
        # Now read: everything arrives, once, and the document is whole.
        chunks = []
        client.dataReceived = chunks.append
        client.transport.resumeProducing()
        yield self.wait_for(lambda: sim.completed == 1, timeout=20, what="the shard to finish")
        yield self.wait_for(lambda: b"".join(chunks[-3:]).endswith(b"0\r\n\r\n"), timeout=20,
                            what="the end of the response")
        client.transport.loseConnection()
        raw = client.received + b"".join(chunks)
        head, _, body = raw.partition(b"\r\n\r\n")
        self.assertIn(b"Transfer-Encoding: chunked", head)
        doc = json.loads(_dechunk(body))
        self.assertEqual(len(doc["data"]), n)
        self.assertEqual(doc["data"][-1]["id"], n)


def _dechunk(body: bytes) -> bytes:
    out, pos = [], 0
    while True:
        end = body.index(b"\r\n", pos)
        size = int(body[pos:end], 16)
        if size == 0:
            return b"".join(out)
        out.append(body[end + 2 : end + 2 + size])
        pos = end + 2 + size + 2
