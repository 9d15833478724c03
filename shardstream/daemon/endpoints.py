"""Listening: endpoint strings checked, listened on, or sockets adopted.

Twisted's endpoint parser is the judge of a ``listen`` string; the core's
config loader is given :func:`endpoint_problem` to ask it. Every stream
endpoint we support listens synchronously, so a port that cannot be bound
ends the daemon with one line before the reactor runs.
"""

from __future__ import annotations

import os
import re
import socket
from typing import Any

from twisted.internet import endpoints

from .startup import StartupError

_SYSTEMD = re.compile(r"^systemd:domain=(INET6?|UNIX):(index=[0-9]+|name=[^:]+)\Z")


def endpoint_problem(description: str) -> str | None:
    """What is wrong with a Twisted server endpoint string (None: nothing),
    found without listening on it."""
    if description.startswith("systemd:"):
        # The sockets exist only in the process systemd started (the
        # supervisor), so check the form here and the socket when listening.
        if not _SYSTEMD.match(description):
            return ("not a valid systemd endpoint (systemd:domain=INET:index=0 or "
                    "systemd:domain=INET:name=NAME)")
        return None
    try:
        endpoints.serverFromString(None, description)
    except Exception as e:  # Twisted raises several types for bad strings
        return f"not a valid Twisted endpoint ({e.__class__.__name__}: {e})"
    return None


def listen_now(reactor: Any, description: str, factory: Any) -> Any:
    """Listen on an endpoint string and return the port, or raise StartupError."""
    try:
        endpoint = endpoints.serverFromString(reactor, description)
    except IndexError:  # Twisted's way of saying that no such socket was passed
        if description.startswith("systemd:"):
            raise StartupError(f"listen {description!r}: systemd passed no socket with that "
                               "index or name (start it through its .socket unit, or listen "
                               "on tcp:)") from None
        raise StartupError(f"listen {description!r}: no such socket") from None
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


def adopt(reactor: Any, fd: int, factory: Any) -> Any:
    """Accept on a listening socket inherited from the supervisor."""
    probe = socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM)
    family = probe.family
    probe.close()
    port = reactor.adoptStreamPort(fd, family, factory)
    os.close(fd)  # the port holds its own duplicate
    return port


def tcp_address(listen: str) -> tuple[int, str, int, int] | None:
    """``(family, host, port, backlog)`` of a ``tcp:``/``tcp6:`` endpoint string."""
    kind, _, rest = listen.partition(":")
    if kind not in ("tcp", "tcp6"):
        return None
    parts = rest.split(":")
    options = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
    family = socket.AF_INET6 if kind == "tcp6" else socket.AF_INET
    host = options.get("interface", "::" if kind == "tcp6" else "0.0.0.0")
    return family, host, int(parts[0]), int(options.get("backlog", 50))


def bound_socket(spec: str) -> int:
    """A worker's own listening socket on the shared address; returns its fd."""
    family, host, port, backlog = spec.split(",")
    s = socket.socket(int(family), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((host, int(port)))
    s.listen(int(backlog))
    s.setblocking(False)
    return s.detach()
