"""Telling the service manager what the daemon is doing.

systemd's notify protocol (sd_notify(3)) is a few ``KEY=value`` lines in one
datagram to the unix socket named by ``$NOTIFY_SOCKET``; it needs no
library. With workers, only the supervisor talks to systemd (the unit's
``NotifyAccess=main`` would drop the workers' datagrams anyway): each worker
reports its own lifecycle to the supervisor through a pipe, one word per
line, and the supervisor speaks for the whole service (see supervisor.py).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Protocol

from twisted.logger import Logger

from ..core.config import Config

log = Logger(namespace="shardstream")

# Worker -> supervisor reports, one per line on the report pipe.
READY, RELOADED, REJECTED, STOPPING = "ready", "reloaded", "rejected", "stopping"


def serving(config: Config, listen: str) -> str:
    """What STATUS= says of a gateway that serves."""
    return f"serving {len(config.shards)} shards, {len(config.routes)} routes on {listen}"


class Lifecycle(Protocol):
    """Where a gateway process announces its state changes."""

    def ready(self, status: str) -> None: ...

    def reloading(self, status: str) -> None: ...

    def reloaded(self, taken: bool, status: str) -> None: ...

    def stopping(self, status: str) -> None: ...

    def status(self, status: str) -> None: ...


class SystemdNotifier:
    """sd_notify(3) to ``$NOTIFY_SOCKET``; does nothing when it is unset."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self._socket: socket.socket | None = None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields in one datagram; False when nobody listens."""
        if not self.address:
            return False
        target = self.address
        if target.startswith("@"):  # an abstract socket
            target = "\0" + target[1:]
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto("\n".join(fields).encode(), target)
        except OSError as e:
            # The service manager going away must never take the gateway down.
            log.warn("sd_notify to {address} failed: {error}", address=self.address, error=e)
            return False
        return True

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def reloading(self, status: str) -> None:
        # systemd >= 253 (Type=notify-reload) pairs RELOADING=1 with the
        # monotonic time of the request; older versions ignore both.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", f"STATUS={status}")

    def reloaded(self, taken: bool, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def stopping(self, status: str) -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")


class PipeReporter:
    """A worker's reports to its supervisor, on an inherited pipe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def _say(self, word: str) -> None:
        try:
            os.write(self.fd, f"{word}\n".encode())
        except OSError:  # the supervisor is gone; it cannot be told
            pass

    def ready(self, status: str) -> None:
        self._say(READY)

    def reloading(self, status: str) -> None:
        pass  # the supervisor said RELOADING=1 before it passed SIGHUP on

    def reloaded(self, taken: bool, status: str) -> None:
        self._say(RELOADED if taken else REJECTED)

    def stopping(self, status: str) -> None:
        self._say(STOPPING)

    def status(self, status: str) -> None:
        pass
