"""Signals under twistd: SIGTERM/SIGINT stop cleanly, SIGHUP reloads."""

from __future__ import annotations

import signal
from typing import Any, Callable

from twisted.logger import Logger

log = Logger(namespace="shardstream")


def install_signal_handlers(reactor: Any, reload: Callable[[], object], label: str) -> None:
    """SIGTERM/SIGINT: a clean stop (exit 0, not twistd's -15); SIGHUP: reload
    (Twisted installs no SIGHUP handler, and the default kills the process).

    Installed when the service starts, before the reactor runs: twistd starts
    the service first, and a SIGTERM in between would otherwise kill the
    process at once, orphaning the workers it had just started. The reactor
    replaces the SIGTERM handler with its own when it runs, so the service
    installs these once more after that; a stop asked for before then waits
    in the reactor's queue for its first turn."""

    def stop(signum: int, frame: Any) -> None:
        log.info("{label}: signal {signum}: stopping", label=label, signum=signum)
        reactor.callFromThread(stop_reactor, reactor)

    def hup(signum: int, frame: Any) -> None:
        reactor.callFromThread(reload)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, hup)


def ignore_reloads() -> None:
    """From the stop on, a SIGHUP is ignored: not a reload, and never the
    default action (which would kill the process as it drains)."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def stop_reactor(reactor: Any) -> None:
    """Stop once, however many signals arrive."""
    if reactor.running and not getattr(reactor, "_stopped", False):
        reactor.stop()
