"""docs/partners.md, as a partner reads it: every example in it, pasted into
bash in order, prints what the guide shows, against a gateway with API keys
(one of them rate-limited) in front of the demo's four shards (one slow),
which fail on request (``demo_fail``)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

import tomli_w
from openapi_spec_validator import validate
from twisted.internet import defer, reactor, threads
from twisted.trial.unittest import SkipTest

from docexamples import examples, run
from processes import ROOT
from shardstream.core import keys
from shardstream.demo.inventory import demo_config_data, shard_sims
from shardstream.web.site import TrackingSite
from support import GatewayTestCase

GUIDE = ROOT / "docs" / "partners.md"
NEEDS = ("curl", "jq", "node")


class PartnerGuideTests(GatewayTestCase):
    timeout = 120

    def start(self) -> dict[str, str]:
        """The demo's shards and routes, with keys: KEY, and LIMITED_KEY at 0.5/s."""
        for sim in shard_sims(reactor):
            site = TrackingSite(sim)
            port = reactor.listenTCP(0, site, interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            self._sites.append(site)
            self.urls[sim.name] = f"http://127.0.0.1:{port.getHost().port}"
        data = demo_config_data(list(self.urls.values()), "tcp:0:interface=127.0.0.1")
        routes = [r["path"] for r in data["routes"]]
        made = {name: keys.new_key() for name in ("acme", "limited")}
        path = os.path.join(tempfile.mkdtemp(), "keys.toml")
        with open(path, "wb") as f:
            tomli_w.dump({"partners": {
                "acme": {"scopes": sorted(set(routes)), "keys": [
                    {"id": made["acme"][0], "hash": keys.hash_key(made["acme"][1])}]},
                "limited": {"scopes": ["/v3/events"], "rate": 0.5, "burst": 1, "keys": [
                    {"id": made["limited"][0], "hash": keys.hash_key(made["limited"][1])}]},
            }}, f)
        base = self.gateway(routes=data["routes"], upstream=data["upstream"],
                            shard_map=data["shard_map"], auth={"keys_file": path})
        return {**os.environ, "GW": base, "KEY": made["acme"][1],
                "LIMITED_KEY": made["limited"][1]}

    @defer.inlineCallbacks
    def test_every_example_of_the_guide_prints_what_it_shows(self):
        missing = [t for t in NEEDS if shutil.which(t) is None]
        if missing:
            raise SkipTest(f"the guide's examples need {', '.join(missing)} (Debian packages "
                           "curl, jq, nodejs; installed by .ci/run)")
        env = self.start()
        guide = examples(GUIDE)
        self.assertGreaterEqual(len(guide), 15)
        for example in guide:
            yield threads.deferToThread(run, example, {"python3": sys.executable}, ROOT, env,
                                        "docs/partners.md")

    @defer.inlineCallbacks
    def test_the_api_description_the_guide_links_to_is_valid_openapi(self):
        env = self.start()
        self.assertIn("/openapi.json", GUIDE.read_text())
        r = yield self.fetch(env["GW"] + "/openapi.json")
        doc = json.loads(r.body)
        validate(doc)  # openapi-spec-validator
        meta = doc["components"]["schemas"]["List"]["properties"]["meta"]
        self.assertIn("complete", meta["required"])
        self.assertIn("bearer", doc["components"]["securitySchemes"])
        params = {p["name"] for p in doc["paths"]["/v3/events"]["get"]["parameters"]}
        self.assertLessEqual({"limit", "cursor", "partial", "sort", "vendor_id"}, params)
