"""Two gateway instances behind a real HAProxy on loopback: one stops mid-run,
requests keep succeeding; a cursor from one instance works on the other."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from support import listen_port
from processes import ROOT, env, get, stop, twistd, wait_for_line

pytestmark = pytest.mark.skipif(not shutil.which("haproxy"),
                                reason="haproxy (Debian package) is not installed")


def start_shards(tmp_path: Path) -> tuple[subprocess.Popen, dict[str, str]]:
    proc = subprocess.Popen([sys.executable, "-m", "shardstream.demo"], cwd=tmp_path, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    assert line.startswith("SHARDS "), line
    return proc, dict(pair.split("=", 1) for pair in line.split()[1:])


def gateway_config(port: int, shards: dict[str, str]) -> str:
    text = f'[server]\nlisten = "tcp:{port}:interface=127.0.0.1"\naccess_log = false\n'
    text += '[cursor]\nsecret_env = "SHARDSTREAM_CURSOR_SECRET"\n'
    for name, url in shards.items():
        text += f'[shards.{name}]\nurls = ["{url}"]\n'
    text += ('[[routes]]\npath = "/v3/events"\nmode = "scatter"\nitems = "data.item"\n'
             'sort = ["starts_at"]\nmax_limit = 100\nid_fields = ["id"]\n')
    return text


def test_instances_behind_haproxy(tmp_path, monkeypatch):
    monkeypatch.setenv("SHARDSTREAM_CURSOR_SECRET", "shared-secret-for-all-instances")
    shards_proc, shards = start_shards(tmp_path)
    gw_ports = [listen_port(), listen_port()]
    gateways = []
    haproxy = None
    try:
        for i, port in enumerate(gw_ports):
            cfg = tmp_path / f"gw{i}.toml"
            cfg.write_text(gateway_config(port, shards))
            proc = twistd(tmp_path, "--config", str(cfg))
            wait_for_line(proc, "listening on")
            gateways.append(proc)

        # A cursor made by one instance continues on the other (no server state).
        status, body = get(f"http://127.0.0.1:{gw_ports[0]}/v3/events?sort=starts_at&limit=7")
        first = json.loads(body)
        status, body = get(f"http://127.0.0.1:{gw_ports[1]}/v3/events?cursor="
                           + first["meta"]["next_cursor"])
        assert status == 200
        second = json.loads(body)
        both = [e["starts_at"] for e in first["data"] + second["data"]]
        assert both == sorted(both) and len(set(e["id"] for e in first["data"] + second["data"])) == 14

        lb_port = listen_port()
        cfg = (ROOT / "etc" / "haproxy.cfg").read_text()
        cfg = cfg.replace("bind 127.0.0.1:8000", f"bind 127.0.0.1:{lb_port}")
        cfg = cfg.replace("127.0.0.1:8081", f"127.0.0.1:{gw_ports[0]}")
        cfg = cfg.replace("127.0.0.1:8082", f"127.0.0.1:{gw_ports[1]}")
        (tmp_path / "haproxy.cfg").write_text(cfg)
        haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(tmp_path / "haproxy.cfg")],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 10
        while get_or_none(f"http://127.0.0.1:{lb_port}/healthz") != 200:
            assert time.monotonic() < deadline, "haproxy did not come up"
            time.sleep(0.1)

        results: list[tuple[int, int]] = []
        stop_at = time.monotonic() + 6

        def load() -> None:
            while time.monotonic() < stop_at:
                status, body = get(f"http://127.0.0.1:{lb_port}/v3/events?limit=20")
                n = len(json.loads(body)["data"]) if status == 200 else -1
                results.append((status, n))

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(2)
        code, out = stop(gateways[0])  # one instance goes away mid-run
        assert code == 0, out
        for t in threads:
            t.join()
        assert len(results) > 20
        assert all(r == (200, 20) for r in results), [r for r in results if r != (200, 20)][:5]
    finally:
        if haproxy is not None:
            haproxy.send_signal(signal.SIGTERM)
            haproxy.wait(timeout=10)
        for proc in gateways:
            if proc.poll() is None:
                stop(proc)
        shards_proc.terminate()
        shards_proc.wait(timeout=10)


def get_or_none(url: str) -> int | None:
    try:
        return get(url)[0]
    except OSError:
        return None
