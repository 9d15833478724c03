"""TLS, both ways: the gateway's listener, and its checks of https shards.

Both are built with Twisted's own TLS API (pyOpenSSL underneath; host names
checked by service-identity): the listener's options wrap any stream
endpoint (tcp:, a socket systemd passed), so that workers share it as they
share a plain one; shard connections are verified against the system's
trust store or a configured CA bundle, optionally presenting a client
certificate.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import crypto
from twisted.internet import ssl
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from ..core.config import TLSConfig, UpstreamConfig

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _certificates(path: str) -> list[ssl.Certificate]:
    """Every certificate of a PEM bundle."""
    marker = b"-----END CERTIFICATE-----"
    pem = _read(path)
    return [ssl.Certificate.loadPEM(part + marker) for part in pem.split(marker) if b"BEGIN" in part]


def server_options(tls: TLSConfig) -> ssl.CertificateOptions:
    chain = _certificates(tls.cert)
    key = ssl.KeyPair.load(_read(tls.key), crypto.FILETYPE_PEM)
    options: dict[str, Any] = {}
    if tls.client_ca is not None:  # partners must present a certificate signed by these
        options = {"verify": True, "requireCertificate": True,
                   "caCerts": [c.original for c in _certificates(tls.client_ca)]}
    return ssl.CertificateOptions(
        privateKey=key.original, certificate=chain[0].original,
        extraCertChain=[c.original for c in chain[1:]],
        raiseMinimumTo=_VERSIONS[tls.min_version], **options)


def wrap(factory: Any, tls: TLSConfig | None) -> Any:
    """The listening factory, speaking TLS when [tls] is configured."""
    if tls is None:
        return factory
    return TLSMemoryBIOFactory(server_options(tls), False, factory)


@implementer(IPolicyForHTTPS)
class ShardTLS:
    """How https shards are checked: host name and chain, against the system
    store or ``upstream.ca_file``; with ``upstream.client_cert`` presented."""

    def __init__(self, config: UpstreamConfig) -> None:
        self.trust = (ssl.trustRootFromCertificates(_certificates(config.ca_file))
                      if config.ca_file else None)
        self.client = None
        if config.client_cert:
            pem = _read(config.client_cert)
            if config.client_key:
                pem += b"\n" + _read(config.client_key)
            self.client = ssl.PrivateCertificate.loadPEM(pem)
        self._default = BrowserLikePolicyForHTTPS() if not (self.trust or self.client) else None

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        if self._default is not None:
            return self._default.creatorForNetloc(hostname, port)
        return ssl.optionsForClientTLS(hostname.decode("idna"), trustRoot=self.trust,
                                       clientCertificate=self.client)
