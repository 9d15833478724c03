"""One gateway worker process, started by the supervisor (see workers.py).

    python -m shardstream.worker --fd 3 --config PATH [--index N]

It accepts on the listening socket it inherited as ``--fd`` and otherwise
behaves as the single-process gateway: SIGTERM stops it, SIGHUP reloads
its config.
"""

from __future__ import annotations

import argparse
import sys

from twisted.logger import globalLogBeginner, textFileLogObserver

from . import config as config_mod
from .service import EX_CONFIG, GatewayService


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="shardstream.worker")
    ap.add_argument("--fd", type=int, required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--index", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        config = config_mod.load(a.config)
    except config_mod.ConfigError as e:
        sys.stderr.write(f"shardstream worker {a.index}: config error: {e}\n")
        return EX_CONFIG
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)
    from twisted.internet import reactor

    service = GatewayService(config, config_path=a.config, adopt_fd=a.fd, name=f"worker {a.index}")
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
