"""TLS both ways, with a throwaway CA (trustme) on loopback: shards behind good
and bad certificates, a gateway that listens with TLS and may require partner
certificates."""

from __future__ import annotations

import os

import treq
import trustme
from twisted.internet import defer, reactor, ssl
from twisted.web.client import Agent, ResponseNeverReceived
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from support import GatewayTestCase, items, temp_dir
from shardstream.demo.shardsim import ShardSim
from shardstream.web.site import TrackingSite


@implementer(IPolicyForHTTPS)
class _Client:
    def __init__(self, ca: trustme.CA, cert: trustme.LeafCert | None = None) -> None:
        self.trust = ssl.Certificate.loadPEM(ca.cert_pem.bytes())
        self.cert = (ssl.PrivateCertificate.loadPEM(cert.private_key_and_cert_chain_pem.bytes())
                     if cert else None)

    def creatorForNetloc(self, hostname, port):
        return ssl.optionsForClientTLS(hostname.decode(), trustRoot=self.trust,
                                       clientCertificate=self.cert)


class TLSTests(GatewayTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.ca = trustme.CA()
        self.dir = temp_dir(self)

    def pem(self, name: str, blob) -> str:
        path = os.path.join(self.dir, name)
        blob.write_to_path(path)
        return path

    def tls_shard(self, name: str, cert: trustme.LeafCert) -> str:
        sim = ShardSim(name, items(name, 3))
        self.sims[name] = sim
        site = TrackingSite(sim)
        options = ssl.PrivateCertificate.loadPEM(
            cert.private_key_and_cert_chain_pem.bytes()).options()
        port = reactor.listenSSL(0, site, options, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self._sites.append(site)
        return f"https://127.0.0.1:{port.getHost().port}"

    @defer.inlineCallbacks
    def test_shards_are_verified_against_the_configured_ca(self):
        good = self.tls_shard("good", self.ca.issue_cert("127.0.0.1"))
        wrong_name = self.tls_shard("wrong", self.ca.issue_cert("shard.example"))
        stranger = self.tls_shard("stranger", trustme.CA().issue_cert("127.0.0.1"))
        base = self.gateway(shards={"good": good, "wrong": wrong_name, "stranger": stranger},
                            upstream={"ca_file": self.pem("ca.pem", self.ca.cert_pem),
                                      "retries": 0})
        r = yield self.fetch(base + "/v3/events")
        self.assertEqual(r.code, 200)
        meta = r.json()["meta"]["shards"]
        self.assertEqual(meta["succeeded"], 1)
        self.assertEqual(sorted((f["shard"], f["error"]) for f in meta["failed"]),
                         [("stranger", "tls_error"), ("wrong", "tls_error")])
        self.assertEqual(len(r.json()["data"]), 3)
        self.assertEqual(self.sims["wrong"].requests, [])  # nothing was sent to them
        self.assertEqual(self.sims["stranger"].requests, [])

    @defer.inlineCallbacks
    def test_the_gateway_listens_with_tls_and_may_require_partner_certificates(self):
        self.shard("s1")
        server = self.ca.issue_cert("127.0.0.1")
        partner = self.ca.issue_cert("partner.example")
        outsider = trustme.CA().issue_cert("partner.example")
        self.gateway(tls={"cert": self.pem("gw.pem", server.cert_chain_pems[0]),
                          "key": self.pem("gw.key", server.private_key_pem),
                          "client_ca": self.pem("ca.pem", self.ca.cert_pem)})
        url = f"https://127.0.0.1:{self.service.address.port}/v3/events"

        def get(policy):
            return treq.get(url, agent=Agent(reactor, contextFactory=policy))

        r = yield get(_Client(self.ca, partner))
        self.assertEqual(r.code, 200)
        body = yield r.json()
        self.assertEqual(body["meta"]["shards"]["succeeded"], 1)
        for policy in (_Client(self.ca), _Client(self.ca, outsider)):  # none, or not ours
            with self.assertRaises(ResponseNeverReceived):
                yield get(policy)
        self.assertEqual(len(self.sims["s1"].requests), 1)

    @defer.inlineCallbacks
    def test_the_gateway_presents_its_client_certificate_to_shards_that_ask(self):
        shard_cert = self.ca.issue_cert("127.0.0.1")
        sim = ShardSim("m", items("m", 2))
        self.sims["m"] = sim
        site = TrackingSite(sim)
        key_and_cert = ssl.PrivateCertificate.loadPEM(
            shard_cert.private_key_and_cert_chain_pem.bytes())
        options = ssl.CertificateOptions(
            privateKey=key_and_cert.privateKey.original, certificate=key_and_cert.original,
            verify=True, requireCertificate=True,
            caCerts=[ssl.Certificate.loadPEM(self.ca.cert_pem.bytes()).original])
        port = reactor.listenSSL(0, site, options, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self._sites.append(site)
        url = f"https://127.0.0.1:{port.getHost().port}"
        gateway_cert = self.ca.issue_cert("gateway.example")
        base = self.gateway(shards={"m": url}, upstream={
            "ca_file": self.pem("ca.pem", self.ca.cert_pem), "retries": 0,
            "client_cert": self.pem("client.pem", gateway_cert.cert_chain_pems[0]),
            "client_key": self.pem("client.key", gateway_cert.private_key_pem)})
        r = yield self.fetch(base + "/v3/events")
        self.assertEqual((r.code, len(r.json()["data"])), (200, 2))
        yield self.service.stopService()  # the same shard, without a client certificate
        self._sites.remove(self.service.site)
        base = self.gateway(shards={"m": url}, upstream={
            "ca_file": self.pem("ca.pem", self.ca.cert_pem), "retries": 0})
        r = yield self.fetch(base + "/v3/events")
        self.assertEqual(r.code, 502)  # its only shard failed
        self.assertIn("tls_error", r.body.decode())
