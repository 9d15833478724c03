"""Demo mode: the gateway in front of four embedded demo shards, in one process."""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger

from ..core import config as config_mod
from ..daemon.service import GatewayService
from ..web.site import TrackingSite
from .inventory import SHARDS, demo_config, shard_sims

log = Logger(namespace="shardstream")


class DemoService(Service):
    """The gateway in front of four embedded demo shards, in one process."""

    name = "shardstream-demo"

    def __init__(self, listen: str | None = None, reactor: Any = None, signals: bool = True) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.listen = listen or config_mod.DEFAULT_LISTEN
        self.signals = signals
        self.shard_ports: list[Any] = []
        self.gateway: GatewayService | None = None

    def startService(self) -> None:
        super().startService()
        urls = []
        for sim in shard_sims(self.reactor):
            site = TrackingSite(sim)  # the gateway's access log is enough
            port = self.reactor.listenTCP(0, site, interface="127.0.0.1")
            self.shard_ports.append(port)
            urls.append(f"http://127.0.0.1:{port.getHost().port}")
        config = demo_config(urls, self.listen)
        self.gateway = GatewayService(config, reactor=self.reactor, signals=self.signals)
        self.gateway.startService()
        host = self.gateway.address
        base = f"http://{host.host}:{host.port}"
        shards = ", ".join(
            f"{name} {delay * 1000:.0f} ms at {url}"
            for (name, _, delay, _), url in zip(SHARDS, urls)
        )
        log.info("demo shards: {shards}", shards=shards)
        for line in (
            f"try: curl -N {base}/v3/events",
            f"try: curl -N -H 'Accept: application/x-ndjson' {base}/v3/events",
            f"try: curl -N '{base}/v3/events?sort=starts_at&limit=5'",
            f"try: curl {base}/v3/events/eu~i7",
            f"try: curl {base}/v3/vendors/v300",
            f"try: curl -X POST -d '{{\"vendor_id\": \"v200\", \"title\": \"Night tram tour\"}}' "
            f"{base}/v3/events",
        ):
            log.info("{line}", line=line)

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        super().stopService()
        if self.gateway is not None:
            yield self.gateway.stopService()
        for port in self.shard_ports:
            yield port.stopListening()
