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


def tour(base: str) -> list[str]:
    """The start-up message: three commands to paste, and what each proves
    (README.md's tour starts with the same three)."""
    slowest, _, delay, _ = SHARDS[-1]
    return [
        f"shardstream demo on {base}: try these three in another terminal",
        f"1. the first items leave before the slowest shard ({slowest}, {delay * 1000:.0f} ms) "
        "has even answered:",
        "   curl -s -o /dev/null -w 'first byte after %{time_starttransfer}s, "
        f"whole list after %{{time_total}}s\\n' {base}/v3/events",
        "2. a failing shard is named in meta (?demo_fail=apac makes the apac shard cut its "
        "list half-way):",
        f"   curl -s -H 'Accept: application/x-ndjson' '{base}/v3/events?demo_fail=apac' "
        "| tail -n 1",
        "3. a cursor followed to the end: all 240 events exactly once, 50 a page:",
        "   .venv/bin/python examples/python/shardstream_client.py "
        f"'{base}/v3/events?sort=starts_at&limit=50' | wc -l",
        "more: README.md (A short tour) and docs/partners.md",
    ]


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
        for line in tour(base):
            log.info("{line}", line=line)

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        super().stopService()
        if self.gateway is not None:
            yield self.gateway.stopService()
        for port in self.shard_ports:
            yield port.stopListening()
