"""``twistd shardstream`` options and the service they describe."""

from __future__ import annotations

import signal
from typing import Any

from twisted.python import usage

from ..core import config as config_mod
from .endpoints import endpoint_problem
from .service import GatewayService
from .startup import EX_CONFIG, StartupError, read_config
from .supervisor import Supervisor, resolve_workers

DEFAULT_PIDFILE = "twistd.pid"  # twistd's own default


class Options(usage.Options):
    synopsis = "[--config PATH | --demo] [--listen ENDPOINT]"
    longdesc = (
        "Streaming API gateway for sharded REST applications. With --config it "
        "serves the routes and shards of that TOML file; without it (or with "
        "--demo) it starts four embedded demo shards and fronts them."
    )
    optParameters = [
        ["config", "c", None, "Path of the TOML config file."],
        [
            "listen",
            "l",
            None,
            "Listen endpoint, overriding server.listen "
            f"(a Twisted endpoint string; default {config_mod.DEFAULT_LISTEN}).",
        ],
        [
            "workers",
            "w",
            None,
            "Gateway processes sharing the listening socket, overriding server.workers "
            "(a number, or 'auto' for one per core).",
        ],
    ]
    optFlags = [
        ["demo", None, "Run in front of four embedded demo shards (the default without --config)."],
    ]

    loaded: config_mod.Config | None = None
    loaded_bytes = b""  # the file as it was when it loaded, for the workers
    workers = 1

    def postOptions(self) -> None:
        # SIGHUP's default action ends the process; until the reload handler
        # is in place (when the reactor runs), a SIGHUP is dropped instead:
        # the config is being read anyway.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        _no_default_pidfile_in_the_foreground(getattr(self, "parent", None))
        if self["config"] and self["demo"]:
            raise StartupError("--config and --demo exclude each other", EX_CONFIG)
        if self["listen"]:
            problem = endpoint_problem(self["listen"])
            if problem:
                raise StartupError(f"--listen {self['listen']!r}: {problem}", EX_CONFIG)
        if self["config"]:
            try:
                self.loaded, self.loaded_bytes = read_config(self["config"])
            except config_mod.ConfigError as e:
                raise StartupError(f"config error: {e}", EX_CONFIG) from None
        else:
            self["demo"] = True
        value = self["workers"] or (self.loaded.server.workers if self.loaded else 1)
        try:
            self.workers = resolve_workers(value)
        except ValueError:
            raise StartupError(f"--workers {value!r}: a number >= 1 or 'auto'", EX_CONFIG) from None
        if self.workers > 1 and self.loaded is not None:
            listens = {"server.listen": self["listen"] or self.loaded.server.listen,
                       "admin.listen": self.loaded.admin.listen}
            for key, listen in listens.items():
                if listen is not None and listen.split(":", 1)[0] not in config_mod.SHAREABLE:
                    raise StartupError(f"{key} {listen!r}: several workers share a tcp: or "
                                       "systemd: endpoint only", EX_CONFIG)


def _no_default_pidfile_in_the_foreground(twistd_options: Any) -> None:
    """``twistd -n`` (a terminal, systemd) has no use for twistd's default
    ./twistd.pid, and a stale one can stop the next start (its pid reused,
    say in a new container). Only a --pidfile naming another file is written."""
    if (twistd_options is not None and twistd_options.get("nodaemon")
            and twistd_options.get("pidfile") == DEFAULT_PIDFILE):
        twistd_options["pidfile"] = ""


def make_service(options: Any) -> Any:
    if options["demo"]:
        if options.workers > 1:
            from twisted.logger import Logger

            Logger().warn("demo mode runs one process; --workers is ignored")
        from ..demo.service import DemoService

        return DemoService(listen=options["listen"])
    if options.workers > 1:
        return Supervisor(options.loaded, options["config"], options.workers,
                          listen=options["listen"], config_bytes=options.loaded_bytes)
    return GatewayService(options.loaded, listen=options["listen"], config_path=options["config"])
