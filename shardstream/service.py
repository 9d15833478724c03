"""Lifecycle: listen, reload on SIGHUP, stop on SIGTERM; and demo mode.

Listening happens in ``startService``, which twistd calls before the
reactor runs, so a port that cannot be bound ends the daemon with one line
and a non-zero status instead of a daemon that serves nothing.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, endpoints, task
from twisted.logger import Logger

from . import config as config_mod
from . import demo, parse
from .resource import Gateway, TrackingSite, make_site
from . import upstream
from .upstream import UpstreamClient

log = Logger(namespace="shardstream")


EX_CONFIG = 78  # sysexits.h: a configuration error; systemd is told not to retry it


class StartupError(SystemExit):
    """Ends twistd with a non-zero status after saying why on stderr, in one line."""

    def __init__(self, message: str, status: int = 1) -> None:
        sys.stderr.write(f"shardstream: {message}\n")
        sys.stderr.flush()
        super().__init__(status)


def listen_now(reactor: Any, description: str, factory: Any) -> Any:
    """Listen on an endpoint string and return the port, or raise StartupError."""
    try:
        endpoint = endpoints.serverFromString(reactor, description)
    except Exception as e:
        raise StartupError(f"listen {description!r}: {e}") from None
    results: list[Any] = []
    endpoint.listen(factory).addBoth(results.append)
    if not results:  # every stream endpoint we support listens synchronously
        raise StartupError(f"listen {description!r}: did not complete at startup")
    if isinstance(results[0], Exception) or hasattr(results[0], "getErrorMessage"):
        error = results[0]
        message = error.getErrorMessage() if hasattr(error, "getErrorMessage") else str(error)
        raise StartupError(f"cannot listen on {description!r}: {message}")
    return results[0]


def install_signal_handlers(reactor: Any, reload: Any, label: str) -> None:
    """SIGTERM/SIGINT: a clean stop (exit 0, not twistd's -15); SIGHUP: reload
    (Twisted installs no SIGHUP handler, and the default kills the process)."""

    def stop(signum: int, frame: Any) -> None:
        log.info("{label}: signal {signum}: stopping", label=label, signum=signum)
        reactor.callFromThread(stop_reactor, reactor)

    def hup(signum: int, frame: Any) -> None:
        reactor.callFromThread(reload)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, hup)


def stop_reactor(reactor: Any) -> None:
    """Stop once, however many signals arrive."""
    if reactor.running and not getattr(reactor, "_stopped", False):
        reactor.stop()


def adopt(reactor: Any, fd: int, factory: Any) -> Any:
    """Accept on a listening socket inherited from the supervisor."""
    probe = socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM)
    family = probe.family
    probe.close()
    port = reactor.adoptStreamPort(fd, family, factory)
    os.close(fd)  # the port holds its own duplicate
    return port


class GatewayService(Service):
    name = "shardstream"

    def __init__(
        self,
        config: config_mod.Config,
        listen: str | None = None,
        config_path: str | None = None,
        reactor: Any = None,
        signals: bool = True,
        adopt_fd: int | None = None,
        name: str = "shardstream",
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.config = config
        self.adopt_fd = adopt_fd
        self.label = name
        self.listen = listen or config.server.listen
        self.config_path = config_path
        self.signals = signals
        self.port: Any = None
        self.site: TrackingSite | None = None
        self.retired: list[UpstreamClient] = []

    @property
    def address(self) -> Any:
        return self.port.getHost()

    def startService(self) -> None:
        super().startService()
        if not upstream.FAST_CHUNKED:
            log.warn("this Twisted version's chunked decoder is not the one shardstream's "
                     "faster decoder was written for: using Twisted's own (slower)")
        if parse.BACKEND != parse.FAST_BACKEND:
            log.warn(
                "ijson is using its slow {backend!r} backend, not {fast!r}: "
                "install an ijson wheel with the C extension",
                backend=parse.BACKEND,
                fast=parse.FAST_BACKEND,
            )
        client = UpstreamClient(self.reactor, self.config.upstream)
        gateway = Gateway(self.config, client)
        self.site = make_site(gateway)
        gateway.start()
        if self.adopt_fd is not None:
            self.port = adopt(self.reactor, self.adopt_fd, self.site)
        else:
            self.port = listen_now(self.reactor, self.listen, self.site)
        log.info(
            "{label} listening on {address} with {shards} shards and {routes} routes "
            "(config {source}, ijson backend {backend})",
            label=self.label,
            address=self.address,
            shards=len(self.config.shards),
            routes=len(self.config.routes),
            source=self.config.source,
            backend=parse.BACKEND,
        )
        _warn_about(self.config)
        if self.signals:
            self.reactor.callWhenRunning(self._install_signal_handlers)

    def _install_signal_handlers(self) -> None:
        install_signal_handlers(self.reactor, self.reload, self.label)

    @property
    def gateway(self) -> Gateway:
        return self.site.resource.gateway

    def reload(self) -> bool:
        """Read the config file again; swap it in for new requests if it is valid."""
        if self.config_path is None:
            log.info("SIGHUP: no config file to reload (demo mode)")
            return False
        try:
            new = config_mod.load(self.config_path)
        except config_mod.ConfigError as e:
            log.error("reload rejected, keeping the running config: {error}", error=str(e))
            return False
        old = self.gateway
        client = old.client
        if new.upstream != old.config.upstream:
            client = UpstreamClient(self.reactor, new.upstream)
            # In-flight requests finish on the old pool; then its connections close.
            old.client.retire()
            self.retired.append(old.client)
        if new.server.listen != self.config.server.listen:
            log.warn("reload: server.listen changed; a restart is needed to apply it")
        gateway = Gateway(new, client, previous=old)
        self.site.resource.gateway = gateway
        old.stop()
        gateway.start()
        self.config = new
        _warn_about(new)
        log.info("{label}: reloaded {source}: {shards} shards, {routes} routes", label=self.label,
                 source=new.source, shards=len(new.shards), routes=len(new.routes))
        return True

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        """Drain: stop accepting, let in-flight responses finish (up to
        ``server.drain_timeout``), close idle connections, abort the rest."""
        super().stopService()
        if self.port is not None:
            yield self.port.stopListening()
        if self.site is not None:
            self.gateway.stop()
            yield self._drain(self.config.server.drain_timeout)
            yield self.gateway.client.close()
        for client in self.retired:
            yield client.close()

    @defer.inlineCallbacks
    def _drain(self, timeout: float) -> Any:
        deadline = self.reactor.seconds() + timeout
        busy = self.site.channels
        while busy and self.reactor.seconds() < deadline:
            for channel in list(busy):
                if not channel.requests:  # idle keep-alive connection
                    channel.transport.loseConnection()
            if not any(c.requests for c in busy):
                break
            yield task.deferLater(self.reactor, 0.05, lambda: None)
        active = sum(1 for c in busy if c.requests)
        if active:
            log.warn("{label}: drain deadline: aborting {n} unfinished responses",
                     label=self.label, n=active)
        for channel in list(busy):
            if channel.requests:
                channel.transport.abortConnection()
            else:
                channel.transport.loseConnection()
        # let the transports flush and close before the reactor stops
        for _ in range(20):
            if not busy:
                break
            yield task.deferLater(self.reactor, 0.05, lambda: None)


def _warn_about(config: config_mod.Config) -> None:
    if config.cursor_secret is None and any(r.mode == "scatter" for r in config.routes):
        log.warn("no [cursor] secret configured: cursors are signed with a per-process key and "
                 "only work on this process until it restarts")


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
        for sim in demo.shard_sims(self.reactor):
            site = TrackingSite(sim, quiet=True)  # the gateway's access log is enough
            port = self.reactor.listenTCP(0, site, interface="127.0.0.1")
            self.shard_ports.append(port)
            urls.append(f"http://127.0.0.1:{port.getHost().port}")
        config = demo.demo_config(urls, self.listen)
        self.gateway = GatewayService(config, reactor=self.reactor, signals=self.signals)
        self.gateway.startService()
        host = self.gateway.address
        base = f"http://{host.host}:{host.port}"
        shards = ", ".join(
            f"{name} {delay * 1000:.0f} ms at {url}"
            for (name, _, delay, _), url in zip(demo.SHARDS, urls)
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
