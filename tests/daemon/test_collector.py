"""The collector settings of a serving process (daemon/collector.py)."""

from __future__ import annotations

import subprocess
import sys

from processes import env, get, stop, twistd, wait_for_line
from support import listen_port

from shardstream.core import config


def test_settle_freezes_what_lives_and_raises_the_young_threshold_once():
    code = ("import gc; from shardstream.daemon import collector;"
            "print(collector.settle(0), gc.get_freeze_count() == 0);"
            "print(collector.settle(40000), gc.get_freeze_count() > 1000, gc.get_threshold()[0]);"
            "print(collector.settle(9))")
    out = subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True,
                         text=True, timeout=60, check=True).stdout.split("\n")
    assert out[:3] == ["False True", "True True 40000", "False"]


def test_gc_threshold_is_checked():
    with __import__("pytest").raises(config.ConfigError, match="server.gc_threshold"):
        config.parse({"server": {"gc_threshold": -1},
                      "shards": {"s": {"urls": ["http://127.0.0.1:1"]}}, "routes": []}, "<t>")
    assert config.ServerConfig().gc_threshold == 50_000


def test_the_daemon_settles_its_collector_once_serving(tmp_path):
    port = listen_port()
    proc = twistd(tmp_path, "--listen", f"tcp:{port}:interface=127.0.0.1")
    try:
        line = wait_for_line(proc, "garbage collector:")[-1]
        assert "objects frozen, young threshold 50000" in line
        assert get(f"http://127.0.0.1:{port}/livez")[0] == 200
    finally:
        code, out = stop(proc)
    assert code == 0, out
