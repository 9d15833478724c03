"""Signals under twistd: SIGTERM/SIGINT stop cleanly, SIGHUP reloads."""

from __future__ import annotations

import signal
from typing import Any, Callable

from twisted.logger import Logger

log = Logger(namespace="shardstream")


def install_signal_handlers(reactor: Any, reload: Callable[[], object], label: str) -> None:
    """SIGTERM/SIGINT: a clean stop (exit 0, not twistd's -15); SIGHUP: reload
    (Twisted installs no SIGHUP handler, and the default kills the process).

    See install_until_the_reactor_runs for when."""

    def stop(signum: int, frame: Any) -> None:
        log.info("{label}: signal {signum}: stopping", label=label, signum=signum)
        reactor.callFromThread(stop_reactor, reactor)

    def hup(signum: int, frame: Any) -> None:
        reactor.callFromThread(reload)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, hup)


def install_until_the_reactor_runs(reactor: Any, install: Callable[[], None]) -> None:
    """Install now, and again as the reactor starts. twistd starts the service
    before it runs the reactor: a SIGTERM in between would kill the process at
    once (orphaning the workers a supervisor had just started), so the
    handlers go in now, and a stop asked for then waits in the reactor's queue
    for its first turn. The reactor puts in its own SIGTERM handler as it
    starts (which makes twistd exit -15); the first "during startup" trigger
    after that one puts ours back, before any other start-up work."""
    install()
    if not reactor.running:
        reactor.addSystemEventTrigger("during", "startup", install)


def ignore_reloads() -> None:
    """From the stop on, a SIGHUP is ignored: not a reload, and never the
    default action (which would kill the process as it drains)."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def stop_reactor(reactor: Any) -> None:
    """Stop once, however many signals arrive."""
    if reactor.running and not getattr(reactor, "_stopped", False):
        reactor.stop()
