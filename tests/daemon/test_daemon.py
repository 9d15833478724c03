"""The daemon as ops run it: ``twistd -n shardstream`` in a child process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from processes import TWISTD, children, env, get, stop, twistd, wait_for_line
from support import free_port, listen_port


def test_plugin_is_listed_with_its_options(tmp_path):
    out = subprocess.run([*TWISTD, "shardstream", "--help"], cwd=tmp_path, env=env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for option in ("--config", "--demo", "--listen"):
        assert option in out.stdout


def test_demo_mode_starts_four_shards_and_answers(tmp_path):
    port = listen_port()
    proc = twistd(tmp_path, "--listen", f"tcp:{port}:interface=127.0.0.1")
    try:
        lines = wait_for_line(proc, "more: README.md")
        assert any("demo shards:" in line for line in lines)
        status, body = get(f"http://127.0.0.1:{port}/v3/events")
        assert status == 200
        doc = json.loads(body)
        assert doc["meta"]["shards"] == {"total": 4, "succeeded": 4, "failed": []}
        assert len(doc["data"]) == 240
        assert len({e["id"] for e in doc["data"]}) == 240  # global ids: unique
        assert len({e["id"].split("~")[1] for e in doc["data"]}) == 60  # local ids collide
        assert doc["meta"]["total"] == 240
        status, body = get(f"http://127.0.0.1:{port}/v3/events",
                           {"Accept": "application/x-ndjson"})
        lines = body.decode().splitlines()
        assert len(lines) == 241 and json.loads(lines[-1])["meta"]["shards"]["succeeded"] == 4
        status, body = get(f"http://127.0.0.1:{port}/v3/vendors/v300/events")
        assert status == 200
        assert {e["vendor_id"] for e in json.loads(body)["data"]} == {"v300"}
    finally:
        code, out = stop(proc)
    assert code == 0, out


def test_config_error_exits_non_zero_without_listening(tmp_path):
    port = listen_port()
    (tmp_path / "bad.toml").write_text(
        f'[server]\nlisten = "tcp:{port}:interface=127.0.0.1"\n'
        '[shards.s1]\nurls = ["http://127.0.0.1:1"]\n'
        '[[routes]]\npath = "/x"\nmode = "scatter"\n'
    )
    proc = twistd(tmp_path, "--config", "bad.toml")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 78  # EX_CONFIG
    assert "bad.toml: routes[0].items: is required" in out
    assert "Traceback" not in out
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


def test_busy_port_exits_non_zero(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    listen = f"tcp:{busy.getsockname()[1]}:interface=127.0.0.1"
    try:
        proc = twistd(tmp_path, "--demo", "--listen", listen)
        out, _ = proc.communicate(timeout=60)
    finally:
        busy.close()
    assert proc.returncode == 78  # EX_CONFIG
    # Written to stderr, which twistd's log (this output) has taken over by then.
    assert f"shardstream: cannot listen on {listen!r}: " in out
    assert "Address already in use" in out and "Traceback" not in out


def test_the_access_log_names_the_request_id_and_the_trace_id(tmp_path):
    port = listen_port()
    proc = twistd(tmp_path, "--listen", f"tcp:{port}:interface=127.0.0.1")
    try:
        wait_for_line(proc, "more: README.md")
        trace = "4bf92f3577b34da6a3ce929d0e0e4736"
        status, _ = get(f"http://127.0.0.1:{port}/v3/events?limit=1",
                        {"X-Request-ID": "ops-7", "traceparent": f"00-{trace}-00f067aa0ba902b7-01"})
        assert status == 200
        line = wait_for_line(proc, "request_id=ops-7")[-1]
        assert '"GET /v3/events?limit=1 HTTP/1.1" 200' in line and f"trace_id={trace}" in line
    finally:
        stop(proc)


def one_dead_shard_config(tmp_path: Path, server_line: str) -> tuple[int, Path]:
    """A config file: one scatter route /a over one shard nobody listens on."""
    port = listen_port()
    cfg = tmp_path / "gw.toml"
    cfg.write_text(f'[server]\nlisten = "tcp:{port}:interface=127.0.0.1"\n{server_line}\n'
                   f'[shards.s1]\nurls = ["http://127.0.0.1:{free_port()}"]\n'
                   '[[routes]]\npath = "/a"\nmode = "scatter"\nitems = "data.item"\n')
    return port, cfg


def test_sigterm_makes_readyz_503_while_the_drain_delay_keeps_serving(tmp_path):
    port, cfg = one_dead_shard_config(tmp_path, "drain_delay = 1.5")
    proc = twistd(tmp_path, "--config", str(cfg))
    try:
        wait_for_line(proc, "listening on")
        assert get(f"http://127.0.0.1:{port}/readyz")[0] == 200
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        wait_for_line(proc, "draining")
        status, body = get(f"http://127.0.0.1:{port}/readyz")
        assert (status, json.loads(body)["status"]) == (503, "not_ready")
        assert get(f"http://127.0.0.1:{port}/livez")[0] == 200
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert time.monotonic() - started >= 1.4  # it kept serving for the delay
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


def test_config_mode_sigterm_and_sighup_reload(tmp_path):
    port = listen_port()
    dead = free_port()
    base = (f'[server]\nlisten = "tcp:{port}:interface=127.0.0.1"\n'
            f'[shards.s1]\nurls = ["http://127.0.0.1:{dead}"]\n')
    route_a = '[[routes]]\npath = "/a"\nmode = "scatter"\nitems = "data.item"\n'
    route_b = '[[routes]]\npath = "/b"\nmode = "scatter"\nitems = "data.item"\n'
    cfg = tmp_path / "gw.toml"
    cfg.write_text(base + route_a)
    proc = twistd(tmp_path, "--config", str(cfg))
    try:
        wait_for_line(proc, "shardstream listening on")
        status, body = get(f"http://127.0.0.1:{port}/a")
        assert status == 502
        err = json.loads(body)["error"]
        assert err["meta"]["shards"]["failed"][0]["error"] == "connect_refused"
        assert get(f"http://127.0.0.1:{port}/b")[0] == 404

        cfg.write_text(base + route_a + route_b)
        proc.send_signal(signal.SIGHUP)
        wait_for_line(proc, "reloaded")
        assert get(f"http://127.0.0.1:{port}/b")[0] == 502

        cfg.write_text(base + "[[routes]]\npath = 'broken'\n")
        proc.send_signal(signal.SIGHUP)
        lines = wait_for_line(proc, "reload rejected")
        assert "routes[0].path" in lines[-1]
        assert get(f"http://127.0.0.1:{port}/b")[0] == 502  # old config still serves
    finally:
        code, out = stop(proc)
    assert code == 0, out


def test_workers_share_the_socket_restart_and_follow_signals(tmp_path):
    port, cfg = one_dead_shard_config(tmp_path, "workers = 1")
    proc = twistd(tmp_path, "--config", str(cfg), "--workers", "2")
    try:
        lines = wait_for_line(proc, "supervisor on")
        lines += wait_for_line(proc, "listening on")
        lines += wait_for_line(proc, "listening on")
        workers = children(proc.pid)
        assert len(workers) == 2
        for _ in range(10):
            status, body = get(f"http://127.0.0.1:{port}/a")
            assert status == 502 and json.loads(body)["error"]["code"] == "shards_failed"
        victim = sorted(workers)[0]
        os.kill(victim, signal.SIGKILL)
        wait_for_line(proc, "starting it again")
        wait_for_line(proc, "listening on")
        new = children(proc.pid)
        assert len(new) == 2 and victim not in new
        for _ in range(10):
            assert get(f"http://127.0.0.1:{port}/a")[0] == 502
        proc.send_signal(signal.SIGHUP)
        wait_for_line(proc, "reloaded")
        wait_for_line(proc, "reloaded")
    finally:
        code, out = stop(proc)
    assert code == 0, out
    assert not [p for p in new if os.path.exists(f"/proc/{p}")]  # SIGTERM reached every worker


def test_a_worker_started_again_after_a_rejected_reload_runs_the_running_config(tmp_path):
    """It used to read the file on disk, which the rejected reload had left
    bad: it exited 78, and was started again every few seconds until the
    file was fixed. It takes the supervisor's copy of the running config;
    once a reload is taken, a worker started again takes the new one."""
    port, cfg = one_dead_shard_config(tmp_path, "workers = 1")
    good = cfg.read_text()
    proc = twistd(tmp_path, "--config", str(cfg), "--workers", "2")
    try:
        wait_for_line(proc, "listening on")
        wait_for_line(proc, "listening on")
        cfg.write_text(good.replace('mode = "scatter"', 'mode = "nonsense"'))
        proc.send_signal(signal.SIGHUP)
        wait_for_line(proc, "reload rejected")
        victim = sorted(children(proc.pid))[0]
        os.kill(victim, signal.SIGKILL)
        lines = wait_for_line(proc, "listening on")
        assert not [line for line in lines if "config error" in line], lines
        assert len(children(proc.pid)) == 2
        for _ in range(10):
            assert get(f"http://127.0.0.1:{port}/a")[0] == 502  # the route as it ran
        cfg.write_text(good.replace('path = "/a"', 'path = "/b"'))
        proc.send_signal(signal.SIGHUP)
        wait_for_line(proc, "reload finished")
        victim = sorted(children(proc.pid))[0]
        os.kill(victim, signal.SIGKILL)
        wait_for_line(proc, "listening on")
        for _ in range(10):  # both workers, the one started again too, serve /b now
            assert get(f"http://127.0.0.1:{port}/b")[0] == 502
            assert get(f"http://127.0.0.1:{port}/a")[0] == 404
    finally:
        code, out = stop(proc)
    assert code == 0, out


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's reaper may be slow to collect it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _gone(pids: set[int], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not [p for p in pids if _running(p)]:
            return True
        time.sleep(0.05)
    return False


# Each holds one start-up gap open for 1.5 s, printing a line first, so that
# the SIGTERM sent on that line lands in it.
_BEFORE_THE_REACTOR = ("import time; from twisted.internet import reactor; go = reactor.run; "
                       "reactor.run = lambda *a, **k: (print('gap', flush=True), "
                       "time.sleep(1.5), go(*a, **k)); ")
_AS_IT_STARTS = ("import time; from shardstream.daemon import collector; settle = "
                 "collector.settle; collector.settle = lambda *a: (print('gap', flush=True), "
                 "time.sleep(1.5), settle(*a)); ")


@pytest.mark.parametrize("workers,gap", [(1, _BEFORE_THE_REACTOR), (2, _BEFORE_THE_REACTOR),
                                         (1, _AS_IT_STARTS)],
                         ids=["one-process", "supervisor", "one-process-as-the-reactor-starts"])
def test_a_sigterm_while_starting_is_a_clean_stop(tmp_path, workers, gap):
    """twistd starts the service (which starts the workers) before it runs the
    reactor, whose signal handlers came only then: a SIGTERM in between (a
    fresh-clone CI run hit it) killed the supervisor at once, and its workers
    went on serving, unsupervised, holding the port and the output pipe. Once
    the reactor runs, its own SIGTERM handler (exit -15) was in place until
    ours went back in, after the start-up work queued before it."""
    port, cfg = one_dead_shard_config(tmp_path, f"workers = {workers}")
    proc = subprocess.Popen(
        [TWISTD[0], "-c", gap + "from twisted.scripts.twistd import run; run()",
         "-n", "--pidfile=", "shardstream", "--config", str(cfg)],
        cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_line(proc, "gap")
        pids = children(proc.pid)
        assert len(pids) == (workers if workers > 1 else 0)
    finally:
        code, out = stop(proc)
    assert code == 0, out  # it was -15: killed by the signal, or by twistd after the drain
    assert "stopping: draining 2 workers" in out if workers > 1 else "stopping" in out
    assert "Traceback" not in out, out
    assert _gone(pids), [p for p in pids if _running(p)]


def test_workers_stop_when_the_supervisor_is_killed(tmp_path):
    """SIGKILL (or a crash) gives the supervisor no chance to stop its workers:
    the kernel sends each one a SIGTERM (PR_SET_PDEATHSIG), and it drains and
    exits instead of serving the port on its own."""
    port, cfg = one_dead_shard_config(tmp_path, "workers = 2")
    proc = twistd(tmp_path, "--config", str(cfg))
    try:
        wait_for_line(proc, "service ready")
        workers = children(proc.pid)
        assert len(workers) == 2
        assert get(f"http://127.0.0.1:{port}/a")[0] == 502
        proc.kill()
        proc.wait(timeout=10)
        assert _gone(workers), [p for p in workers if _running(p)]
        with pytest.raises(OSError):  # nobody serves the port any more
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        for p in workers:
            if _running(p):
                os.kill(p, signal.SIGKILL)
        proc.stdout.close()


@pytest.mark.skipif(not shutil.which("systemd-socket-activate"),
                    reason="systemd-socket-activate (Debian package systemd) is not installed")
def test_workers_share_a_socket_passed_by_systemd(tmp_path):
    port = listen_port()
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[server]\nlisten = "systemd:domain=INET:index=0"\nworkers = 2\n'
                   f'[shards.s1]\nurls = ["http://127.0.0.1:{free_port()}"]\n'
                   '[[routes]]\npath = "/a"\nmode = "scatter"\nitems = "data.item"\n')
    proc = subprocess.Popen(
        ["systemd-socket-activate", "-l", f"127.0.0.1:{port}", "--fdname=web", "-E", "PYTHONPATH",
         *TWISTD, "-n", "--pidfile=", "shardstream", "--config", str(cfg)],
        cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(0.5)
        status, body = get(f"http://127.0.0.1:{port}/a")  # the first connection starts it
        assert status == 502 and json.loads(body)["error"]["code"] == "shards_failed"
        for _ in range(10):
            assert get(f"http://127.0.0.1:{port}/a")[0] == 502
        assert len(children(proc.pid)) == 2
    finally:
        code, out = stop(proc)
    assert code == 0, out
    assert "supervisor on" in out


def test_sigterm_lets_an_in_flight_stream_finish(tmp_path):
    import threading

    port = listen_port()
    proc = twistd(tmp_path, "--listen", f"tcp:{port}:interface=127.0.0.1")
    wait_for_line(proc, "more: README.md")
    got = {}

    def fetch():
        got["status"], got["body"] = get(f"http://127.0.0.1:{port}/v3/events")

    t = threading.Thread(target=fetch)
    t.start()
    time.sleep(0.2)  # the slowest demo shard answers after 450 ms: the stream is in flight
    code, out = stop(proc)
    t.join()
    assert code == 0, out
    assert got["status"] == 200
    doc = json.loads(got["body"])
    assert len(doc["data"]) == 240 and doc["meta"]["shards"]["succeeded"] == 4


def test_a_listen_twisted_cannot_parse_exits_78_naming_file_and_key(tmp_path):
    (tmp_path / "gw.toml").write_text(
        '[server]\nlisten = "tcp:http"\nmax_body = 0\n'
        '[shards.s1]\nurls = ["http://127.0.0.1:1"]\n'
        '[[routes]]\npath = "/x"\nmode = "scatter"\nitems = "data.item"\n')
    out = subprocess.run([*TWISTD, "-n", "--pidfile=", "shardstream", "--config", "gw.toml"],
                         cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 78, out.stdout + out.stderr  # EX_CONFIG
    first, second = out.stderr.splitlines()  # every problem, one line each
    assert first.startswith(
        "shardstream: config error: gw.toml: server.listen: not a valid Twisted endpoint ("), first
    assert second == "shardstream: gw.toml: server.max_body: must be greater than 0, not 0"


def test_a_systemd_endpoint_without_a_passed_socket_exits_78_saying_so(tmp_path):
    (tmp_path / "gw.toml").write_text(
        '[server]\nlisten = "systemd:domain=INET:index=0"\n'
        '[shards.s1]\nurls = ["http://127.0.0.1:1"]\n'
        '[[routes]]\npath = "/x"\nmode = "scatter"\nitems = "data.item"\n')
    environ = {k: v for k, v in env().items() if not k.startswith("LISTEN_")}
    out = subprocess.run([*TWISTD, "-n", "--pidfile=", "shardstream", "--config", "gw.toml"],
                         cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=60)
    assert out.returncode == 78, out.stdout + out.stderr
    assert "systemd passed no socket with that index" in out.stdout + out.stderr
    assert "list index out of range" not in out.stdout + out.stderr
