"""One gateway worker process, started by the supervisor (see supervisor.py).

    python -m shardstream.daemon.worker (--fd 3 | --bind FAMILY,HOST,PORT,BACKLOG) --config PATH
        [--index N] [--report-fd 4] [--supervisor-pid PID] [--config-copy PATH]

It accepts on the listening socket it inherited as ``--fd``, or on its own
socket bound with SO_REUSEPORT to the shared address, and otherwise
behaves as the single-process gateway: SIGTERM stops it, SIGHUP reloads
its config. It reports listening, reloads and stopping to the supervisor
on ``--report-fd`` (see notify.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from twisted.logger import globalLogBeginner

from ..core import config as config_mod
from ..observe import logs
from .endpoints import bound_socket
from .notify import PipeReporter
from .service import GatewayService
from .startup import EX_CONFIG, load_config, load_config_bytes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="shardstream.daemon.worker")
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--fd", type=int, help="an inherited listening socket")
    where.add_argument("--bind", help="family,host,port,backlog: bind with SO_REUSEPORT")
    admin = ap.add_mutually_exclusive_group()
    admin.add_argument("--admin-fd", type=int, help="an inherited admin listening socket")
    admin.add_argument("--admin-bind", help="the admin endpoint's family,host,port,backlog")
    ap.add_argument("--config", required=True, help="the file a SIGHUP reloads")
    ap.add_argument("--config-copy", help="the supervisor's copy of the running config: what "
                    "this worker starts with (a reload the supervisor rejected left --config bad)")
    ap.add_argument("--index", type=int, default=0)
    ap.add_argument("--report-fd", type=int, help="a pipe for lifecycle reports to the supervisor")
    ap.add_argument("--supervisor-pid", type=int,
                    help="stop (SIGTERM) when this process, our parent, ends")
    a = ap.parse_args(argv)
    if a.supervisor_pid is not None and not stop_with_parent(a.supervisor_pid):
        sys.stderr.write(f"shardstream worker {a.index}: the supervisor is gone\n")
        return 1
    # A SIGHUP before the reactor runs would kill us (its default action);
    # the supervisor only sends one once we said we listen, and the handler
    # installed then replaces this.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        raw = None
        if a.config_copy is not None:
            try:
                with open(a.config_copy, "rb") as f:
                    raw = f.read()
            except OSError:  # gone (the supervisor is stopping): the file itself
                pass
        config = load_config(a.config) if raw is None else load_config_bytes(raw, a.config)
    except config_mod.ConfigError as e:
        sys.stderr.write(f"shardstream worker {a.index}: config error: {e}\n")
        return EX_CONFIG
    globalLogBeginner.beginLoggingTo([logs.observer(config.server.log_format)],
                                     redirectStandardIO=False)
    from twisted.internet import reactor

    fd = a.fd if a.fd is not None else bound_socket(a.bind)
    admin_fd = a.admin_fd if a.admin_bind is None else bound_socket(a.admin_bind)
    reporter = PipeReporter(a.report_fd) if a.report_fd is not None else None
    service = GatewayService(config, config_path=a.config, adopt_fd=fd, name=f"worker {a.index}",
                             lifecycle=reporter, admin_fd=admin_fd)
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    return 0


def stop_with_parent(parent: int) -> bool:
    """Ask the kernel for a SIGTERM when the supervisor ends, however it ends
    (SIGKILL, a crash): an orphaned worker would go on serving the port,
    unsupervised, with no one to stop it. False if the supervisor is gone
    already (before we asked). Linux only; elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        libc = ctypes.CDLL(None, use_errno=True)
        zero = ctypes.c_ulong(0)
        if libc.prctl(ctypes.c_int(PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGTERM),
                      zero, zero, zero) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    return os.getppid() == parent


if __name__ == "__main__":
    sys.exit(main())
