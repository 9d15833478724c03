"""What the daemon does before it serves: load the config with the daemon's
own checks, prepare the process once, and end with status 78 (EX_CONFIG)
and one clear line per problem when it cannot start."""

from __future__ import annotations

import sys
from typing import Any

from twisted.application.service import Service
from twisted.logger import Logger

from ..core import config as config_mod
from ..core import parse
from ..observe import logs
from ..upstream import chunked, pool

log = Logger(namespace="shardstream")

EX_CONFIG = 78  # sysexits.h: a configuration error; systemd is told not to retry it


class StartupError(SystemExit):
    """Ends twistd after saying why on stderr, one line per problem.

    The status is EX_CONFIG unless told otherwise: whatever stops the
    gateway before it serves (the config, the options, a ``listen`` that
    cannot be parsed or bound) is for ops to fix, not for a restart loop.
    """

    def __init__(self, message: str, status: int = EX_CONFIG) -> None:
        sys.stderr.write("".join(f"shardstream: {line}\n" for line in message.splitlines()))
        sys.stderr.flush()
        super().__init__(status)


def load_config(path: str) -> config_mod.Config:
    """The core's loader, with Twisted's endpoint parser judging ``server.listen``."""
    return read_config(path)[0]


def read_config(path: str) -> tuple[config_mod.Config, bytes]:
    """:func:`load_config`, and the file's bytes it was made from."""
    from .endpoints import endpoint_problem

    return config_mod.read(path, check_listen=endpoint_problem)


def load_config_bytes(raw: bytes, path: str) -> config_mod.Config:
    """A config from bytes read earlier (a supervisor's copy); errors name ``path``."""
    from .endpoints import endpoint_problem

    return config_mod.loads(raw, path, check_listen=endpoint_problem)


def prepare_process() -> None:
    """Process-wide settings the gateway needs, made once when a service
    starts (never on import): integers of any length for the parser, and
    the faster chunked decoder in Twisted's HTTP client, which also keeps
    the Connection field for the relay to honour."""
    parse.prepare()
    if not chunked.install():
        log.warn("this Twisted version's chunked decoder is not the one shardstream's "
                 "faster decoder was written for: using Twisted's own (slower)")
    if not pool.keep_connection_tokens():
        log.warn("this Twisted version's HTTP client parser is not the one shardstream was "
                 "written for: fields a shard names in Connection may be relayed")
    if parse.BACKEND != parse.FAST_BACKEND:
        log.warn("ijson is using its slow {backend!r} backend, not {fast!r}: "
                 "install an ijson wheel with the C extension",
                 backend=parse.BACKEND, fast=parse.FAST_BACKEND)


class ConfiguredService(Service):
    """A service of ours: under twistd, the log is written in the config's
    ``server.log_format`` (twistd asks its application for a log observer)."""

    config: config_mod.Config

    def setServiceParent(self, parent: Any) -> None:
        super().setServiceParent(parent)
        if hasattr(parent, "setComponent"):  # twistd's application
            logs.attach(parent, self.config.server.log_format)
