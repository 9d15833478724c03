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
the supervisor and no worker drops its running config. The supervisor
speaks to systemd for the service: READY=1 once every worker listens, and a
reload is finished once every worker reported it (notify.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
from typing import Any

from twisted.internet import defer, protocol
from twisted.logger import Logger

from ..core import config as config_mod
from ..observe import metrics as metrics_mod
from . import notify
from .endpoints import listen_now, tcp_address
from .signals import ignore_reloads, install_signal_handlers, install_until_the_reactor_runs
from .startup import ConfiguredService, StartupError, read_config

log = Logger(namespace="shardstream.supervisor")

WORKER_FD = 3
REPORT_FD = 4
ADMIN_FD = 5
RELOAD_TIMEOUT = 30.0  # a worker that has not reported its reload by then is not waited for


class _Idle(protocol.Factory):
    """The supervisor's own factory: it never accepts a connection."""

    noisy = False


class _Worker(protocol.ProcessProtocol):
    def __init__(self, supervisor: "Supervisor", index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.started = supervisor.reactor.seconds()
        self.pid = 0
        self.ended: defer.Deferred[None] = defer.Deferred()
        self._partial = b""

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD != REPORT_FD:
            return
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            self.supervisor._reported(self, line.decode("ascii", "replace").strip())

    def processEnded(self, reason: Any) -> None:
        self.supervisor._ended(self, reason)
        self.ended.callback(None)


class Supervisor(ConfiguredService):
    name = "shardstream-supervisor"

    def __init__(self, config: config_mod.Config, config_path: str, workers: int,
                 listen: str | None = None, reactor: Any = None, signals: bool = True,
                 config_bytes: bytes | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.config = config
        self.config_path = config_path
        # The file as it was when the running config loaded: a worker started
        # again after a rejected reload runs that, not the file now on disk.
        self.config_bytes = config_bytes
        self.snapshot: str | None = None
        self.count = workers
        self.listen = listen or config.server.listen
        self.signals = signals
        self.shared: list[_Shared] = []
        self.metrics_dir: str | None = None
        self.workers: dict[int, tuple[_Worker, Any]] = {}
        self.stopping = False
        self.restarts = 0
        self.lifecycle = notify.SystemdNotifier()
        self.ready: set[int] = set()  # workers that listen
        self.announced = False  # READY=1 sent for the whole service
        self.reload_pending: set[int] = set()  # workers asked to reload, not done yet
        self.stale: set[int] = set()  # workers that were starting when a reload came
        self.reload_again = False  # a SIGHUP came during a reload
        self.reload_rejected = 0
        self.reload_timer: Any = None

    def startService(self) -> None:
        super().startService()
        self.metrics_dir = metrics_mod.shared_directory()  # before any metric exists here
        if self.config_bytes is not None:
            self.snapshot = _snapshot_path()
            _write_snapshot(self.snapshot, self.config_bytes)
        self.shared = [_Shared(self.reactor, self.listen, "", WORKER_FD)]
        if self.config.admin.listen is not None:
            self.shared.append(_Shared(self.reactor, self.config.admin.listen, "admin-",
                                       ADMIN_FD))
        shown = [shared.open() for shared in self.shared]
        if self.signals:  # before the workers exist: a SIGTERM from now on stops them too
            install_until_the_reactor_runs(self.reactor, self._install_signal_handlers)
        for i in range(self.count):
            self._spawn(i)
        log.info("shardstream supervisor on {address}: {n} workers (metrics in {metrics_dir})",
                 address=" and ".join(shown), n=self.count, metrics_dir=self.metrics_dir,
                 event="startup")
        self.lifecycle.status(f"starting {self.count} workers on {self.listen}")
        _warn_about_local_limits(self.config, self.count)

    def _spawn(self, index: int) -> None:
        worker = _Worker(self, index)
        args = [sys.executable, "-m", "shardstream.daemon.worker", "--config", self.config_path,
                "--index", str(index), "--report-fd", str(REPORT_FD),
                "--supervisor-pid", str(os.getpid())]
        if self.snapshot is not None:
            args += ["--config-copy", self.snapshot]
        fds: dict[int, int | str] = {0: 0, 1: 1, 2: 2, REPORT_FD: "r"}
        for shared in self.shared:
            args += shared.worker_args(fds)
        env = os.environ.copy()
        env.pop("NOTIFY_SOCKET", None)  # the supervisor speaks for the service
        process = self.reactor.spawnProcess(worker, sys.executable, args, env=env, childFDs=fds)
        worker.pid = process.pid
        self.workers[index] = (worker, process)

    def _reported(self, worker: _Worker, word: str) -> None:
        if self.workers.get(worker.index, (None,))[0] is not worker:
            return
        if word == notify.READY:
            self.ready.add(worker.index)
            if worker.index in self.stale:  # it started on the file before a reload's
                self.stale.discard(worker.index)
                self._signal(worker.index, signal.SIGHUP)
            if len(self.ready) == self.count and not self.stopping:
                if not self.announced:
                    self.announced = True
                    log.info("service ready: {status}", status=self._serving())
                    self.lifecycle.ready(self._serving())
                else:
                    self.lifecycle.status(self._serving())
        elif word in (notify.RELOADED, notify.REJECTED) and worker.index in self.reload_pending:
            self.reload_rejected += word == notify.REJECTED
            self.reload_pending.discard(worker.index)
            if not self.reload_pending:
                self._reload_done()

    def _serving(self) -> str:
        return (notify.serving(self.config, self.listen)
                + f" with {len(self.ready)} of {self.count} workers ready")

    def _ended(self, worker: _Worker, reason: Any) -> None:
        if self.workers.get(worker.index, (None,))[0] is worker:
            del self.workers[worker.index]
        self.ready.discard(worker.index)
        metrics_mod.process_ended(worker.pid)
        if worker.index in self.reload_pending:  # it reads the new file when it starts again
            self.reload_pending.discard(worker.index)
            if not self.reload_pending:
                self._reload_done()
        if self.stopping:
            return
        self.lifecycle.status(f"worker {worker.index} ended; restarting it; " + self._serving())
        lived = self.reactor.seconds() - worker.started
        self.restarts += 1
        delay = 0.1 if lived > 5 else min(10.0, 0.5 * 2 ** min(self.restarts, 5))
        log.warn("worker {i} ended ({reason}); starting it again in {delay:.1f} s",
                 i=worker.index, reason=reason.getErrorMessage(), delay=delay,
                 event="worker_restart", restarts=self.restarts)
        self.reactor.callLater(delay, self._respawn, worker.index)

    def _respawn(self, index: int) -> None:
        if not self.stopping and index not in self.workers:
            self._spawn(index)

    def _signal_all(self, signum: int) -> None:
        for index in list(self.workers):
            self._signal(index, signum)

    def reload(self) -> None:
        """Check the file, then reload every worker; the service has reloaded
        (READY=1 after RELOADING=1) when every worker said so. A worker that
        does not listen yet is told once it does; a SIGHUP during a reload
        makes another follow it; during the stop, SIGHUP is ignored."""
        if self.stopping:
            log.info("SIGHUP while stopping: ignored")
            return
        if self.reload_pending:
            self.reload_again = True
            log.info("SIGHUP during a reload: another reload follows it")
            return
        if self.announced:
            self.lifecycle.reloading(f"reloading {self.config_path}")
        try:  # its drain times apply from now
            self.config, raw = read_config(self.config_path)
        except config_mod.ConfigError as e:
            metrics_mod.metrics().reloads.labels("rejected").inc()
            log.error("reload rejected, keeping the running config: {error}", error=str(e),
                      event="reload_rejected")
            self._reloaded(False, "reload rejected; ")
            return
        if self.snapshot is not None:
            _write_snapshot(self.snapshot, raw)
        self.reload_pending = set(self.workers) & self.ready
        self.stale = set(self.workers) - self.ready  # still starting: told when they listen
        self.reload_rejected = 0
        log.info("SIGHUP: reloading {n} workers", n=len(self.reload_pending))
        if not self.reload_pending:
            self._reload_done()
            return
        self.reload_timer = self.reactor.callLater(RELOAD_TIMEOUT, self._reload_late)
        for index in self.reload_pending:
            self._signal(index, signal.SIGHUP)

    def _reload_late(self) -> None:
        self.reload_timer = None
        log.warn("reload: workers {late} did not report within {t:g} s",
                 late=sorted(self.reload_pending), t=RELOAD_TIMEOUT)
        self.reload_pending.clear()
        self._reload_done()

    def _reload_done(self) -> None:
        if self.reload_timer is not None and self.reload_timer.active():
            self.reload_timer.cancel()
        self.reload_timer = None
        if self.stopping:
            log.info("reload overtaken by the stop")
            return
        rejected = self.reload_rejected
        metrics_mod.metrics().reloads.labels("rejected" if rejected else "taken").inc()
        note = f"{rejected} workers rejected the reload; " if rejected else "reloaded; "
        log.info("reload finished: {status}", status=note + self._serving(), event="reload")
        self._reloaded(not rejected, note)
        if self.reload_again:
            self.reload_again = False
            self.reactor.callLater(0, self.reload)

    def _reloaded(self, taken: bool, note: str) -> None:
        if self.announced:  # before READY=1, a reload is no state change for systemd
            self.lifecycle.reloaded(taken, note + self._serving())

    def _signal(self, index: int, signum: int) -> None:
        entry = self.workers.get(index)
        if entry is not None:
            try:
                entry[1].signalProcess(signum)
            except Exception:  # already gone
                pass

    def _install_signal_handlers(self) -> None:
        install_signal_handlers(self.reactor, self.reload, "supervisor")

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        super().stopService()
        ignore_reloads()
        self.stopping = True
        self.lifecycle.stopping(f"stopping: draining {len(self.workers)} workers")
        log.info("stopping: draining {n} workers", n=len(self.workers), event="drain")
        if self.reload_timer is not None and self.reload_timer.active():
            self.reload_timer.cancel()
        ended = [w.ended for w, _ in self.workers.values()]
        self._signal_all(signal.SIGTERM)
        server = self.config.server  # the workers drain first, then they are killed
        kill = self.reactor.callLater(server.drain_delay + server.drain_timeout + 5,
                                      self._signal_all, signal.SIGKILL)
        yield defer.DeferredList(ended)
        if kill.active():
            kill.cancel()
        for shared in self.shared:
            yield shared.close()
        if self.metrics_dir is not None:
            metrics_mod.remove_directory(self.metrics_dir)
        if self.snapshot is not None:
            shutil.rmtree(os.path.dirname(self.snapshot), ignore_errors=True)


def _snapshot_path() -> str:
    """A private file for the running config's copy (it may hold secrets)."""
    import tempfile

    directory = tempfile.mkdtemp(prefix="config-", dir=os.environ.get("RUNTIME_DIRECTORY"))
    return os.path.join(directory, "running.toml")


def _write_snapshot(path: str, raw: bytes) -> None:
    """Replace the copy at once (a worker starting meanwhile reads the old or the new)."""
    fd = os.open(path + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(raw)
    os.replace(path + ".new", path)


def _warn_about_local_limits(config: config_mod.Config, workers: int) -> None:
    """Local buckets are per process: each worker allows a partner its whole rate."""
    auth = config.auth
    if auth is None or config.rate_limit.backend != "local":
        return
    limited = [p.name for p in auth.keys.partners if p.rate is not None or p.concurrency]
    if limited:
        log.warn("rate limits are local to each of the {n} workers: partners {partners} get "
                 "their rate and concurrency once per worker; set [rate_limit] backend = "
                 "\"redis\" for one limit across workers and hosts", n=workers,
                 partners=", ".join(limited), event="local_limits")


class _Shared:
    """One listening address every worker accepts on.

    A ``tcp:`` address is bound here without listening (to fail early if it
    is taken, and to hold it), and each worker binds its own socket to it
    with SO_REUSEPORT; any other endpoint (a socket systemd passed, a unix
    socket) is listened on here and inherited by the workers."""

    def __init__(self, reactor: Any, listen: str, flag: str, fd: int) -> None:
        self.reactor, self.listen, self.flag, self.fd = reactor, listen, flag, fd
        self.port: Any = None
        self.reserved: socket.socket | None = None
        self.bind: tuple[int, str, int] | None = None
        self.backlog = 50

    def open(self) -> str:
        address = tcp_address(self.listen)
        if address is None:
            self.port = listen_now(self.reactor, self.listen, _Idle())
            self.port.stopReading()  # only the workers accept
            return str(self.port.getHost())
        family, host, port, self.backlog = address
        self.reserved = socket.socket(family, socket.SOCK_STREAM)
        self.reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            self.reserved.bind((host, port))
        except OSError as e:
            raise StartupError(f"cannot listen on {self.listen!r}: {e.strerror}") from None
        self.bind = (family, host, self.reserved.getsockname()[1])
        return f"{host}:{self.bind[2]} (SO_REUSEPORT)"

    def worker_args(self, fds: dict[int, int | str]) -> list[str]:
        if self.bind is not None:
            family, host, port = self.bind
            return [f"--{self.flag}bind", f"{int(family)},{host},{port},{self.backlog}"]
        fds[self.fd] = self.port.fileno()
        return [f"--{self.flag}fd", str(self.fd)]

    def close(self) -> Any:
        if self.reserved is not None:
            self.reserved.close()
        return self.port.stopListening() if self.port is not None else None


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
