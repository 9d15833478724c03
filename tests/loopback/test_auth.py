"""Partner API keys over real HTTP: 401, 403, what reaches the shards."""

from __future__ import annotations

import os
import tempfile

import tomli_w
from twisted.internet import defer

from shardstream.core import keys
from support import GatewayTestCase, items

ROUTES = [
    {"path": "/v3/events", "mode": "scatter", "items": "data.item"},
    {"path": "/v3/vendors/{vendor_id}/events", "mode": "route", "shard_key": "vendor_id"},
]


class AuthTests(GatewayTestCase):
    def start(self, scopes: list[str], **auth: str) -> tuple[str, str]:
        self.shard("s1", items("s1", 3, vendor_id="v1"))
        key_id, key = keys.new_key()
        path = os.path.join(tempfile.mkdtemp(), "keys.toml")
        with open(path, "wb") as f:
            tomli_w.dump({"partners": {"acme": {"scopes": scopes, "keys": [
                {"id": key_id, "hash": keys.hash_key(key)}]}}}, f)
        base = self.gateway(routes=ROUTES, shard_map={"vendor_id": {"v1": "s1"}},
                            auth={"keys_file": path, **auth})
        return base, key

    @defer.inlineCallbacks
    def test_no_key_or_a_wrong_key_is_401_with_a_challenge_and_reaches_no_shard(self):
        base, key = yield self.start(["/v3/events"])
        for headers in ({}, {"Authorization": "Bearer ssk_00000000_" + "A" * 43},
                        {"Authorization": "Basic YWNtZTpwdw=="}, {"Authorization": key}):
            r = yield self.fetch(base + "/v3/events", headers=headers)
            self.assertEqual((r.code, r.json()["error"]["code"]), (401, "unauthorized"))
            self.assertEqual(r.headers.getRawHeaders(b"www-authenticate"),
                             [b'Bearer realm="shardstream"'])
        r = yield self.fetch(base + "/no/such/route")  # no key: 401 before 404
        self.assertEqual(r.code, 401)
        r = yield self.fetch(base + "/v3/vendors/v1/events", method="POST", body=b"{}")
        self.assertEqual(r.code, 401)  # a streamed write never started either
        self.assertEqual(self.sims["s1"].requests, [])

    @defer.inlineCallbacks
    def test_a_valid_key_reads_in_scope_and_gets_403_outside_it(self):
        base, key = yield self.start(["/v3/events:read", "/v3/vendors/{vendor_id}/events:read"])
        auth = {"Authorization": f"Bearer {key}"}
        r = yield self.fetch(base + "/v3/events", headers=auth)
        self.assertEqual((r.code, len(r.json()["data"])), (200, 3))
        r = yield self.fetch(base + "/v3/vendors/v1/events", method="POST", body=b"{}",
                             headers=auth)
        self.assertEqual((r.code, r.json()["error"]["code"]), (403, "forbidden"))
        self.assertEqual(r.json()["error"]["partner"], "acme")
        self.assertEqual([q["method"] for q in self.sims["s1"].requests], ["GET"])
        r = yield self.fetch(base + "/no/such/route", headers=auth)
        self.assertEqual(r.code, 404)
        r = yield self.fetch(base + "/v3/vendors/v1/events", method="OPTIONS", headers=auth)
        self.assertEqual(r.code, 403)  # read is GET and HEAD only

    @defer.inlineCallbacks
    def test_credentials_stay_at_the_gateway_and_the_shard_learns_the_partner(self):
        base, key = yield self.start(["/v3/events", "/v3/vendors/{vendor_id}/events"],
                                     header="X-Api-Key", partner_header="X-Partner")
        r = yield self.fetch(base + "/v3/vendors/v1/events", method="POST", body=b'{"a":1}',
                             headers={"X-Api-Key": key, "Cookie": "session=s3cr3t",
                                      "X-Partner": "someone-else", "X-Trace": "t"})
        self.assertEqual(r.code, 201)
        r = yield self.fetch(base + "/v3/events", headers={"Authorization": f"Bearer {key}"})
        self.assertEqual(r.code, 200)
        for seen in self.sims["s1"].requests:
            headers = seen["headers"]
            self.assertNotIn("authorization", headers)
            self.assertNotIn("cookie", headers)
            self.assertNotIn("x-api-key", headers)
            self.assertEqual(headers["x-partner"], ["acme"])  # never the client's own value
        self.assertEqual(self.sims["s1"].requests[0]["headers"]["x-trace"], ["t"])

    @defer.inlineCallbacks
    def test_load_balancer_checks_pass_without_a_key_and_ops_paths_are_not_partner_routes(self):
        base, key = yield self.start(["/v3/events"])
        for path in ("/livez", "/readyz"):
            r = yield self.fetch(base + path)
            self.assertEqual(r.code, 200, path)
        r = yield self.fetch(base + "/openapi.json")  # the API's description: public
        self.assertEqual((r.code, r.json()["openapi"]), (200, "3.1.0"))
        for path in ("/metrics", "/healthz"):  # on admin.listen only, with [auth]
            r = yield self.fetch(base + path)
            self.assertEqual(r.code, 401, path)
            r = yield self.fetch(base + path, headers={"Authorization": f"Bearer {key}"})
            self.assertEqual(r.code, 404, path)


class ShardCredentialTests(GatewayTestCase):
    @defer.inlineCallbacks
    def test_each_shard_gets_its_own_credential_on_every_request_and_it_is_never_logged(self):
        from twisted.logger import globalLogPublisher

        self.shard("s1", items("s1", 2, vendor_id="v1"))
        self.shard("s2", items("s2", 2))
        token = os.path.join(tempfile.mkdtemp(), "s1.token")
        with open(token, "w") as f:
            f.write("Bearer shard-one-secret\n")
        os.environ["S2_TOKEN"] = "shard-two-secret"
        self.addCleanup(os.environ.pop, "S2_TOKEN")
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        base = self.gateway(
            routes=ROUTES, shard_map={"vendor_id": {"v1": "s1"}},
            shards={"s1": {"urls": [self.urls["s1"]],
                           "credentials": {"header": "Authorization", "value_file": token}},
                    "s2": {"urls": [self.urls["s2"]],
                           "credentials": {"header": "X-Shard-Key", "value_env": "S2_TOKEN"}}},
            health={"path": "/healthz", "interval": 0.05, "timeout": 0.04})
        r = yield self.fetch(base + "/v3/events", headers={"Authorization": "Bearer client"})
        self.assertEqual(r.code, 200)
        r = yield self.fetch(base + "/v3/vendors/v1/events")
        self.assertEqual(r.code, 200)
        yield self.wait_for(lambda: any(q["uri"] == "/healthz" for q in self.sims["s2"].requests),
                            what="a health check")
        for q in self.sims["s1"].requests:
            self.assertEqual(q["headers"]["authorization"], ["Bearer shard-one-secret"], q["uri"])
        for q in self.sims["s2"].requests:
            self.assertEqual(q["headers"]["x-shard-key"], ["shard-two-secret"], q["uri"])
            self.assertNotEqual(q["headers"].get("authorization"), ["Bearer shard-one-secret"])
        self.assertNotIn("secret", repr(self.service.config))
        text = " ".join(str(e) for e in events)
        self.assertNotIn("shard-one-secret", text)
        self.assertNotIn("shard-two-secret", text)
