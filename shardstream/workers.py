"""Workers on every core: one supervisor, N gateway processes, one socket.

The supervisor (the ``twistd`` process) binds the listening socket once, from
``server.listen`` or a socket systemd passed in, and never accepts on it. It
starts N workers (``python -m shardstream.worker``) that inherit the socket as
fd 3 and accept on it themselves, so the kernel spreads connections over
them. A worker that dies is started again (with a growing pause if it keeps
dying at once). SIGTERM and SIGHUP are passed on to every worker; a SIGHUP
is checked against the config first, so a broken file is reported once by
the supervisor and no worker drops its running config.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, protocol
from twisted.logger import Logger

from . import config as config_mod

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
        self.ended = defer.Deferred()

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
        self.workers: dict[int, tuple[_Worker, Any]] = {}
        self.stopping = False
        self.restarts = 0

    def startService(self) -> None:
        super().startService()
        from .service import listen_now

        self.port = listen_now(self.reactor, self.listen, _Idle())
        self.port.stopReading()  # only the workers accept
        for i in range(self.count):
            self._spawn(i)
        log.info("shardstream supervisor on {address}: {n} workers", address=self.port.getHost(),
                 n=self.count)
        if self.signals:
            self.reactor.callWhenRunning(self._install_signal_handlers)

    def _spawn(self, index: int) -> None:
        worker = _Worker(self, index)
        args = [sys.executable, "-m", "shardstream.worker", "--fd", str(WORKER_FD),
                "--config", self.config_path, "--index", str(index)]
        process = self.reactor.spawnProcess(
            worker, sys.executable, args, env=os.environ.copy(),
            childFDs={0: 0, 1: 1, 2: 2, WORKER_FD: self.port.fileno()},
        )
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
            config_mod.load(self.config_path)
        except config_mod.ConfigError as e:
            log.error("reload rejected, keeping the running config: {error}", error=str(e))
            return
        log.info("SIGHUP: reloading {n} workers", n=len(self.workers))
        self._signal_all(signal.SIGHUP)

    def _install_signal_handlers(self) -> None:
        from .service import install_signal_handlers

        install_signal_handlers(self.reactor, self.reload, "supervisor")

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        super().stopService()
        self.stopping = True
        ended = [w.ended for w, _ in self.workers.values()]
        self._signal_all(signal.SIGTERM)
        kill = self.reactor.callLater(15, self._signal_all, signal.SIGKILL)
        yield defer.DeferredList(ended)
        if kill.active():
            kill.cancel()
        if self.port is not None:
            yield self.port.stopListening()


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
