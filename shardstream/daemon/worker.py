"""One gateway worker process, started by the supervisor (see supervisor.py).

    python -m shardstream.daemon.worker (--fd 3 | --bind FAMILY,HOST,PORT,BACKLOG) --config PATH

It accepts on the listening socket it inherited as ``--fd``, or on its own
socket bound with SO_REUSEPORT to the shared address, and otherwise
behaves as the single-process gateway: SIGTERM stops it, SIGHUP reloads
its config.
"""

from __future__ import annotations

import argparse
import sys

from twisted.logger import globalLogBeginner, textFileLogObserver

from ..core import config as config_mod
from .endpoints import bound_socket
from .service import GatewayService
from .startup import EX_CONFIG, load_config


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="shardstream.daemon.worker")
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--fd", type=int, help="an inherited listening socket")
    where.add_argument("--bind", help="family,host,port,backlog: bind with SO_REUSEPORT")
    ap.add_argument("--config", required=True)
    ap.add_argument("--index", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        config = load_config(a.config)
    except config_mod.ConfigError as e:
        sys.stderr.write(f"shardstream worker {a.index}: config error: {e}\n")
        return EX_CONFIG
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)
    from twisted.internet import reactor

    fd = a.fd if a.fd is not None else bound_socket(a.bind)
    service = GatewayService(config, config_path=a.config, adopt_fd=fd, name=f"worker {a.index}")
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
