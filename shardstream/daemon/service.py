"""The gateway service: listen, reload on SIGHUP, drain on SIGTERM.

Listening happens in ``startService``, which twistd calls before the
reactor runs, so a port that cannot be bound ends the daemon with one line
and a non-zero status instead of a daemon that serves nothing.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task
from twisted.logger import Logger

from ..core import config as config_mod
from ..core import parse, split
from ..upstream import tls
from ..upstream.client import UpstreamClient
from ..core.directory import BadDirectoryFile
from ..web.directory import Directory, load_later, read_files
from ..web.gateway import Gateway
from ..observe.metrics import metrics
from ..web.site import TrackingSite, make_admin_site, make_site
from .endpoints import adopt, listen_now
from .notify import Lifecycle, SystemdNotifier, serving
from . import collector
from .signals import install_signal_handlers, install_until_the_reactor_runs
from .startup import ConfiguredService, StartupError, load_config, prepare_process

log = Logger(namespace="shardstream")


class GatewayService(ConfiguredService):
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
        lifecycle: Lifecycle | None = None,
        admin_fd: int | None = None,
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
        self.admin_fd = admin_fd
        self.admin_port: Any = None  # admin.listen's, when configured
        self.site: TrackingSite | None = None
        self.generation = 1
        self._reloading: defer.Deferred[bool] | None = None
        self._again = False  # a SIGHUP came during a reload
        self.retired: list[UpstreamClient] = []
        self.lifecycle: Lifecycle = lifecycle if lifecycle is not None else SystemdNotifier()
        # A worker's reloads are counted once, by its supervisor.
        self.counts_reloads = lifecycle is None

    @property
    def address(self) -> Any:
        return self.port.getHost()

    def startService(self) -> None:
        super().startService()
        prepare_process()
        metrics().generation.set(self.generation)
        client = UpstreamClient(self.reactor, self.config.upstream)
        try:
            files = read_files(self.config)
        except BadDirectoryFile as e:
            raise StartupError(f"config error: directory file {e}") from None
        gateway = Gateway(self.config, client,
                          directory=Directory(self.reactor, self.config, files))
        self.site = make_site(gateway)
        gateway.start()
        factory = tls.wrap(self.site, self.config.tls)  # [tls]: the partners' side speaks TLS
        if self.adopt_fd is not None:
            self.port = adopt(self.reactor, self.adopt_fd, factory)
        else:
            self.port = listen_now(self.reactor, self.listen, factory)
        admin_listen = self.config.admin.listen
        if self.admin_fd is not None:
            self.admin_port = adopt(self.reactor, self.admin_fd, make_admin_site(self.site))
        elif admin_listen is not None:
            self.admin_port = listen_now(self.reactor, admin_listen, make_admin_site(self.site))
        if self.admin_port is not None:
            log.info("{label}: admin endpoint (/livez /readyz /healthz /metrics) on {address}",
                     label=self.label, address=self.admin_port.getHost())
        log.info(
            "{label} listening on {address} with {shards} shards and {routes} routes "
            "(config {source}; list items: {items})",
            event="startup",
            label=self.label,
            address=self.address,
            shards=len(self.config.shards),
            routes=len(self.config.routes),
            source=self.config.source,
            backend=parse.BACKEND,
            native_items=split.use_native(self.config.server.item_parser),
            items=split.describe(self.config.server.item_parser),
        )
        _warn_about(self.config)
        _warn_if_open(self.config, self.address)
        if self.signals:  # the process's own service (not one of many in a test run)
            install_until_the_reactor_runs(self.reactor, self._install_signal_handlers)
            self.reactor.callWhenRunning(collector.settle, self.config.server.gc_threshold)
        self.reactor.callWhenRunning(self.lifecycle.ready, self._serving())

    def _serving(self) -> str:
        return serving(self.config, self.listen)

    def _install_signal_handlers(self) -> None:
        install_signal_handlers(self.reactor, self.reload, self.label)

    @property
    def gateway(self) -> Gateway:
        assert self.site is not None
        gateway: Gateway = self.site.resource.gateway
        return gateway

    def reload(self) -> "defer.Deferred[bool]":
        """Read the config file again; swap it in for new requests if it is valid.
        Not while stopping: the drain keeps the config it has. The directory
        files are read in a thread, the running ones serving meanwhile; a
        SIGHUP during a reload makes one more once it is over."""
        if not self.running:
            log.info("{label}: SIGHUP while stopping: ignored", label=self.label)
            return defer.succeed(False)
        if self._reloading is not None:
            self._again = True
            return self._reloading
        self.lifecycle.reloading(f"reloading {self.config_path or 'nothing (demo mode)'}")
        self._reloading = d = defer.maybeDeferred(self._reload)

        def over(taken: bool) -> bool:
            self._reloading = None
            if self.counts_reloads:
                metrics().reloads.labels("taken" if taken else "rejected").inc()
            self.lifecycle.reloaded(taken, ("" if taken else "reload rejected; ")
                                    + self._serving())
            if self._again:
                self._again = False
                self.reload()
            return taken

        d.addCallback(over)
        return d

    @defer.inlineCallbacks
    def _reload(self) -> Any:
        if self.config_path is None:
            log.info("SIGHUP: no config file to reload (demo mode)")
            return False
        try:
            new = load_config(self.config_path)
        except config_mod.ConfigError as e:
            log.error("reload rejected, keeping the running config: {error}", error=str(e),
                      event="reload_rejected")
            return False
        try:
            files = yield load_later(new, self.gateway.directory)
        except BadDirectoryFile as e:
            log.error("reload rejected, keeping the running config: directory file {error}",
                      error=str(e), event="reload_rejected")
            return False
        if not self.running:
            return False  # the stop began while the files were read
        old = self.gateway
        client = old.client
        up = new.upstream
        if up != old.config.upstream or up.ca_file or up.client_cert:  # certificates re-read
            client = UpstreamClient(self.reactor, new.upstream)
            # In-flight requests finish on the old pool; then its connections close.
            old.client.retire()
            self.retired.append(old.client)
        for key, before, after in (("server.listen", self.config.server.listen, new.server.listen),
                                   ("admin.listen", self.config.admin.listen, new.admin.listen),
                                   ("[tls]", self.config.tls, new.tls)):
            if before != after:
                log.warn("reload: {key} changed; a restart is needed to apply it", key=key)
        gateway = Gateway(new, client, previous=old,
                          directory=Directory(self.reactor, new, files, old.directory))
        assert self.site is not None  # self.gateway needed it
        self.site.resource.gateway = gateway
        old.stop()
        old.directory.close(gateway.directory)
        if old.limits is not gateway.limits:
            old.limits.close()
        gateway.start()
        _warn_if_open(new, self.address)
        changes = config_mod.changes(self.config, new)
        self.config = new
        self.generation += 1
        metrics().generation.set(self.generation)
        _warn_about(new)
        log.info("{label}: reloaded {source}: {shards} shards, {routes} routes ({changes})",
                 event="reload", label=self.label, source=new.source, shards=len(new.shards),
                 routes=len(new.routes), changes="; ".join(changes) or "no changes",
                 changed=changes, generation=self.generation)
        return True

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        """Drain: say not ready (/readyz 503) and keep serving for
        ``server.drain_delay``, so that load balancers stop sending first; then
        stop accepting, let in-flight responses finish (up to
        ``server.drain_timeout``), close idle connections, abort the rest.
        Once only: a second call finds it stopping or stopped."""
        if not self.running:
            return
        super().stopService()
        self.lifecycle.stopping(f"draining (up to {self.config.server.drain_delay:g} s + "
                                f"{self.config.server.drain_timeout:g} s)")
        if self.site is not None:
            self.site.resource.draining = True
            delay = self.config.server.drain_delay if self.port is not None else 0.0
            log.info("{label}: draining: /readyz answers 503; closing the listener in "
                     "{delay:g} s", label=self.label, delay=delay, event="drain")
            if delay > 0:
                yield task.deferLater(self.reactor, delay, lambda: None)
        if self.port is not None:
            yield self.port.stopListening()
        if self.site is not None:
            self.gateway.stop()
            yield self._drain(self.config.server.drain_timeout)
            yield self.gateway.client.close()
            yield self.gateway.limits.close()
        for client in self.retired:
            yield client.close()
        if self.admin_port is not None:  # last: /readyz said 503 through the whole drain
            yield self.admin_port.stopListening()

    @defer.inlineCallbacks
    def _drain(self, timeout: float) -> Any:
        deadline = self.reactor.seconds() + timeout
        assert self.site is not None  # stopService drains a started service only
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


def _warn_if_open(config: config_mod.Config, address: Any) -> None:
    """Without [auth], anyone who reaches the port reads and writes every shard."""
    import ipaddress

    host = getattr(address, "host", None)
    if config.auth is not None or host is None:
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    log.warn("NO AUTHENTICATION: {host} is not a loopback address and [auth] is not "
             "configured: anyone who can reach it can read and write every shard. Set "
             "[auth] keys_file (see shardstream-keys), or listen on 127.0.0.1 behind a proxy "
             "that authenticates", host=host, event="no_auth")


def _warn_about(config: config_mod.Config) -> None:
    if config.cursor_secret is None and any(r.mode == "scatter" for r in config.routes):
        log.warn("no [cursor] secret configured: cursors are signed with a per-process key and "
                 "only work on this process until it restarts")
