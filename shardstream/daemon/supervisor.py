"""Workers on every core: one supervisor, N gateway processes, one socket.

For a ``tcp:`` endpoint every worker binds its own socket to the same
address with SO_REUSEPORT, and the kernel spreads new connections evenly
over them (a single shared socket lets whichever worker wakes first take a
whole burst of connections). The supervisor (the ``twistd`` process) binds
the address first, without listening, to fail early if it is taken and to
hold it for the workers. A socket systemd passed in is shared instead: the
workers inherit it as fd 3 and accept on it. A worker that dies is started again (with a growing pause if it keeps
dying at once). SIGTERM and SIGHUP are passed on to every worker; a SIGHUP
is checked against the config first, so a broken file is reported once by
the supervisor and no worker drops its running config.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, protocol
from twisted.logger import Logger

from ..core import config as config_mod
from .endpoints import listen_now, tcp_address
from .signals import install_signal_handlers
from .startup import StartupError, load_config

log = Logger(namespace="shardstream.supervisor")

WORKER_FD = 3


class _Idle(protocol.Factory):
    """The supervisor's own factory: it never accepts a connection."""

    noisy = False


class _Worker(protocol.ProcessProtocol):
    def __init__(self, supervisor: "Supervisor", index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.started = supervisor.reactor.seconds()
        self.ended: defer.Deferred[None] = defer.Deferred()

    def processEnded(self, reason: Any) -> None:
        self.supervisor._ended(self, reason)
        self.ended.callback(None)


class Supervisor(Service):
    name = "shardstream-supervisor"

    def __init__(self, config: config_mod.Config, config_path: str, workers: int,
                 listen: str | None = None, reactor: Any = None, signals: bool = True) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.config = config
        self.config_path = config_path
        self.count = workers
        self.listen = listen or config.server.listen
        self.signals = signals
        self.port: Any = None
        self.reserved: socket.socket | None = None
        self.bind: tuple[int, str, int] | None = None
        self.backlog = 50
        self.workers: dict[int, tuple[_Worker, Any]] = {}
        self.stopping = False
        self.restarts = 0

    def startService(self) -> None:
        super().startService()
        address = tcp_address(self.listen)
        if address is not None:
            family, host, port, self.backlog = address
            self.reserved = socket.socket(family, socket.SOCK_STREAM)
            self.reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                self.reserved.bind((host, port))
            except OSError as e:
                raise StartupError(f"cannot listen on {self.listen!r}: {e.strerror}") from None
            self.bind = (family, host, self.reserved.getsockname()[1])
            shown = f"{host}:{self.bind[2]} (SO_REUSEPORT)"
        else:
            self.port = listen_now(self.reactor, self.listen, _Idle())
            self.port.stopReading()  # only the workers accept
            shown = str(self.port.getHost())
        for i in range(self.count):
            self._spawn(i)
        log.info("shardstream supervisor on {address}: {n} workers", address=shown, n=self.count)
        if self.signals:
            self.reactor.callWhenRunning(self._install_signal_handlers)

    def _spawn(self, index: int) -> None:
        worker = _Worker(self, index)
        args = [sys.executable, "-m", "shardstream.daemon.worker", "--config", self.config_path,
                "--index", str(index)]
        fds = {0: 0, 1: 1, 2: 2}
        if self.bind is not None:
            family, host, port = self.bind
            args += ["--bind", f"{int(family)},{host},{port},{self.backlog}"]
        else:
            args += ["--fd", str(WORKER_FD)]
            fds[WORKER_FD] = self.port.fileno()
        process = self.reactor.spawnProcess(worker, sys.executable, args,
                                            env=os.environ.copy(), childFDs=fds)
        self.workers[index] = (worker, process)

    def _ended(self, worker: _Worker, reason: Any) -> None:
        if self.workers.get(worker.index, (None,))[0] is worker:
            del self.workers[worker.index]
        if self.stopping:
            return
        lived = self.reactor.seconds() - worker.started
        self.restarts += 1
        delay = 0.1 if lived > 5 else min(10.0, 0.5 * 2 ** min(self.restarts, 5))
        log.warn("worker {i} ended ({reason}); starting it again in {delay:.1f} s",
                 i=worker.index, reason=reason.getErrorMessage(), delay=delay)
        self.reactor.callLater(delay, self._respawn, worker.index)

    def _respawn(self, index: int) -> None:
        if not self.stopping and index not in self.workers:
            self._spawn(index)

    def pids(self) -> list[int]:
        return [p.pid for _, p in self.workers.values() if p.pid]

    def _signal_all(self, signum: int) -> None:
        for _, process in list(self.workers.values()):
            try:
                process.signalProcess(signum)
            except Exception:  # already gone
                pass

    def reload(self) -> None:
        try:
            self.config = load_config(self.config_path)  # its drain times apply from now
        except config_mod.ConfigError as e:
            log.error("reload rejected, keeping the running config: {error}", error=str(e))
            return
        log.info("SIGHUP: reloading {n} workers", n=len(self.workers))
        self._signal_all(signal.SIGHUP)

    def _install_signal_handlers(self) -> None:
        install_signal_handlers(self.reactor, self.reload, "supervisor")

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        super().stopService()
        self.stopping = True
        ended = [w.ended for w, _ in self.workers.values()]
        self._signal_all(signal.SIGTERM)
        server = self.config.server  # the workers drain first, then they are killed
        kill = self.reactor.callLater(server.drain_delay + server.drain_timeout + 5,
                                      self._signal_all, signal.SIGKILL)
        yield defer.DeferredList(ended)
        if kill.active():
            kill.cancel()
        if self.port is not None:
            yield self.port.stopListening()
        if self.reserved is not None:
            self.reserved.close()


def resolve_workers(value: str | int | None) -> int:
    """``auto`` -> the number of cores; otherwise a whole number >= 1."""
    if value in (None, ""):
        return 1
    if value == "auto":
        return os.cpu_count() or 1
    n = int(value)
    if n < 1:
        raise ValueError("must be at least 1")
    return n
