"""The daemon under systemd: the shipped units, the notify protocol (a fake
``NOTIFY_SOCKET`` the test listens on) and the shipped config as the units
run it."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from processes import ROOT, TWISTD, children, env, get, stop, twistd, wait_for_line
from support import free_port, listen_port

UNITS = ["shardstream.service", "shardstream.socket"]
DROP_IN = "shardstream.service.d/socket-workers.conf"
BIN = Path(sys.executable).parent


class NotifySocket:
    """What systemd listens on: a unix datagram socket; one message per datagram."""

    def __init__(self, directory: Path) -> None:
        self.path = str(directory / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def next(self, timeout: float = 20.0) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.splitlines())

    def expect(self, key: str, timeout: float = 20.0) -> dict[str, str]:
        """The next state change (STATUS-only updates may come between)."""
        message = self.next(timeout)
        while set(message) == {"STATUS"}:
            message = self.next(timeout)
        assert message.get(key) == "1", message
        return message

    def nothing(self, wait: float = 0.3) -> None:
        self.sock.settimeout(wait)
        with pytest.raises(TimeoutError):
            print(self.sock.recv(4096))

    def close(self) -> None:
        self.sock.close()


def _config(tmp_path: Path, port: int, workers: int, routes: int = 1) -> Path:
    cfg = tmp_path / "gw.toml"
    text = (f'[server]\nlisten = "tcp:{port}:interface=127.0.0.1"\nworkers = {workers}\n'
            f'[shards.s1]\nurls = ["http://127.0.0.1:{free_port()}"]\n')
    for i in range(routes):
        text += f'[[routes]]\npath = "/r{i}"\nmode = "scatter"\nitems = "data.item"\n'
    cfg.write_text(text)
    return cfg


def _index(lines: list[str], needle: str, start: int = 0) -> int:
    for i in range(start, len(lines)):
        if needle in lines[i]:
            return i
    raise AssertionError(f"{needle!r} not in:\n{''.join(lines)}")


@pytest.mark.parametrize("workers", [1, 2])
def test_notify_ready_reloading_ready_stopping_in_order(tmp_path, workers):
    port = listen_port()
    cfg = _config(tmp_path, port, workers)
    notify = NotifySocket(tmp_path)
    proc = twistd(tmp_path, "--config", str(cfg), extra_env={"NOTIFY_SOCKET": notify.path})
    try:
        ready = notify.expect("READY")
        assert "serving 1 shards, 1 routes" in ready["STATUS"]
        # READY=1 means it listens: an answer at once, no retry needed
        assert get(f"http://127.0.0.1:{port}/readyz")[0] == 200
        notify.nothing()  # a worker never talks to systemd itself

        cfg.write_text(_config(tmp_path, port, workers, routes=2).read_text())
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        proc.send_signal(signal.SIGHUP)
        reloading = notify.expect("RELOADING")
        assert before <= int(reloading["MONOTONIC_USEC"]) <= before + 20_000_000
        done = notify.expect("READY")
        assert "2 routes" in done["STATUS"] and "rejected" not in done["STATUS"]
        assert get(f"http://127.0.0.1:{port}/r1")[0] == 502  # the new route, on every worker

        cfg.write_text("[server]\nworkers = 0\n")  # rejected: the running config stays
        proc.send_signal(signal.SIGHUP)
        notify.expect("RELOADING")
        done = notify.expect("READY")
        assert "reload rejected" in done["STATUS"] and "2 routes" in done["STATUS"]

        proc.send_signal(signal.SIGTERM)
        stopping = notify.expect("STOPPING")
        assert "draining" in stopping["STATUS"]
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            for pid in [proc.pid, *children(proc.pid)]:
                os.kill(pid, signal.SIGKILL)
            print(proc.communicate()[0])
        notify.close()
    assert proc.returncode == 0, out
    lines = out.splitlines(keepends=True)
    if workers > 1:
        # the supervisor said READY=1 only after every worker listened, and
        # the reload finished only after every worker reloaded
        announced = _index(lines, "service ready")
        for i in range(workers):
            assert _index(lines, f"worker {i} listening") < announced
        finished = _index(lines, "reload finished", announced)
        assert sum("worker" in line and "reloaded" in line
                   for line in lines[announced:finished]) == workers


def test_notify_socket_gone_does_not_stop_the_gateway(tmp_path):
    port = listen_port()
    cfg = _config(tmp_path, port, 1)
    proc = twistd(tmp_path, "--config", str(cfg),
                  extra_env={"NOTIFY_SOCKET": str(tmp_path / "nobody-listens.sock")})
    try:
        wait_for_line(proc, "listening on")
        time.sleep(0.3)
        assert get(f"http://127.0.0.1:{port}/livez")[0] == 200
        proc.send_signal(signal.SIGHUP)
        wait_for_line(proc, "reloaded")
    finally:
        code, out = stop(proc)
    assert code == 0, out


def _installed_units(tmp_path: Path) -> Path:
    """The units and their whole drop-in directory as installed, with
    ExecStart pointing at this Python's bin."""
    drop_ins = sorted(str(f.relative_to(ROOT / "systemd"))
                      for f in (ROOT / "systemd" / "shardstream.service.d").iterdir())
    assert DROP_IN in drop_ins, drop_ins
    for name in [*UNITS, *drop_ins]:
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        text = (ROOT / "systemd" / name).read_text()
        target.write_text(text.replace("/opt/shardstream/bin/", f"{BIN}/"))
    return tmp_path


@pytest.mark.skipif(not shutil.which("systemd-analyze"),
                    reason="systemd-analyze (Debian package systemd) is not installed")
@pytest.mark.skipif(not (BIN / "twistd").exists(), reason="twistd is not installed beside python")
def test_systemd_analyze_verify_accepts_every_unit_and_the_drop_in(tmp_path):
    """Both units and the drop-in verify clean. ``SYSTEMD_UNIT_PATH=<dir>:``
    (the trailing colon keeps the default paths after it) makes verify load
    ``<dir>/shardstream.service.d/``; a bad line in a copy of the drop-in must
    then be reported, or the drop-in was never verified."""

    def verify(where: Path) -> tuple[int, str]:
        out = subprocess.run(["systemd-analyze", "verify", *(str(where / u) for u in UNITS)],
                             cwd=where, capture_output=True, text=True, timeout=60, check=False,
                             env={**os.environ, "SYSTEMD_UNIT_PATH": f"{where}:"})
        return out.returncode, (out.stdout + out.stderr).strip()

    where = _installed_units(tmp_path / "shipped")
    code, said = verify(where)
    assert code == 0 and not said, said

    broken = _installed_units(tmp_path / "broken")
    with (broken / DROP_IN).open("a") as f:
        f.write("Bogus=1\n")  # in the drop-in's last section, [Service]
    code, said = verify(broken)
    assert re.search(r"socket-workers\.conf:\d+: Unknown key '?Bogus'?", said), (code, said)


def _unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",),
                                          comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((ROOT / "systemd" / name).read_text())
    return parser


def _install_steps() -> list[str]:
    text = (ROOT / "systemd" / "shardstream.service").read_text()
    return [line[1:].strip() for line in text.splitlines() if line.startswith("#   ")]


def test_the_unit_the_example_config_and_the_install_steps_agree():
    import tomllib

    service = _unit("shardstream.service")["Service"]
    start = service["ExecStart"].split()
    config_path = start[start.index("--config") + 1]
    steps = "\n".join(_install_steps())
    # the install steps put the example config where ExecStart reads it ...
    assert f"etc/shardstream.toml {os.path.dirname(config_path)}/" in steps
    example = tomllib.loads((ROOT / "etc" / "shardstream.toml").read_text())
    # ... and its cursor secret comes from a credential the unit loads from a
    # file the install steps create
    name = example["cursor"]["secret_credential"]
    assert set(example["cursor"]) == {"secret_credential"}
    credential, source = service["LoadCredential"].split(":", 1)
    assert credential == name
    assert f"> {source})" in steps
    assert service["Type"] == "notify" and service["RestartPreventExitStatus"] == "78"
    assert service["DynamicUser"] == "yes" and service["CapabilityBoundingSet"] == ""
    assert "Environment" not in service  # no secret in the environment
    # the socket's name is the one the drop-in's --listen asks for
    fdname = _unit("shardstream.socket")["Socket"]["FileDescriptorName"]
    drop_in = (ROOT / "systemd" / DROP_IN).read_text()
    assert f"--listen systemd:domain=INET:name={fdname} --workers auto" in drop_in
    assert "--listen" in drop_in.split("ExecStart=")[-1]


def _as_the_unit_runs_it(tmp_path: Path, port: int, drop_in: bool) -> tuple[list[str], dict]:
    """ExecStart of the shipped unit (or its drop-in), on the shipped config,
    with the credential as systemd passes it."""
    text = (ROOT / "systemd" / (DROP_IN if drop_in else "shardstream.service")).read_text()
    start = [line for line in text.splitlines() if line.startswith("ExecStart=")][-1]
    args = start.split("=", 1)[1].split()
    assert args[:4] == ["/opt/shardstream/bin/twistd", "-n", "--pidfile=", "shardstream"]
    args = [str(ROOT / "etc" / "shardstream.toml") if a == "/etc/shardstream/shardstream.toml"
            else a for a in args[4:]]
    if not drop_in:
        args += ["--listen", f"tcp:{port}:interface=127.0.0.1"]
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    service = _unit("shardstream.service")["Service"]
    name, _ = service["LoadCredential"].split(":", 1)
    (credentials / name).write_text("c2VjcmV0LWZvci10aGUtdGVzdHMtb25seQ==\n")
    return [*TWISTD, "-n", "--pidfile=", "shardstream", *args], {
        **env(), "CREDENTIALS_DIRECTORY": str(credentials)}


def test_the_shipped_unit_starts_with_the_shipped_config(tmp_path):
    port = listen_port()
    argv, environ = _as_the_unit_runs_it(tmp_path, port, drop_in=False)
    notify = NotifySocket(tmp_path)
    proc = subprocess.Popen(argv, cwd=tmp_path, env={**environ, "NOTIFY_SOCKET": notify.path},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        notify.expect("READY")
        assert get(f"http://127.0.0.1:{port}/livez")[0] == 200
    finally:
        notify.close()
        code, out = stop(proc)
    assert code == 0, out
    assert "no [cursor] secret" not in out


@pytest.mark.skipif(not shutil.which("systemd-socket-activate"),
                    reason="systemd-socket-activate (Debian package systemd) is not installed")
def test_socket_activation_with_the_shipped_drop_in(tmp_path):
    """The socket unit's name, the drop-in's command: workers on every core
    answer through the socket systemd passed."""
    port = listen_port()
    argv, environ = _as_the_unit_runs_it(tmp_path, port, drop_in=True)
    fdname = _unit("shardstream.socket")["Socket"]["FileDescriptorName"]
    notify = NotifySocket(tmp_path)
    proc = subprocess.Popen(
        ["systemd-socket-activate", "-l", f"127.0.0.1:{port}", f"--fdname={fdname}",
         "-E", "PYTHONPATH", "-E", "CREDENTIALS_DIRECTORY", "-E", "NOTIFY_SOCKET", *argv],
        cwd=tmp_path, env={**environ, "NOTIFY_SOCKET": notify.path},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(0.3)
        status, body = get(f"http://127.0.0.1:{port}/livez")  # the first connection starts it
        assert status == 200, body
        ready = notify.expect("READY")
        assert re.search(r"(\d+) of \1 workers ready", ready["STATUS"]), ready
        assert get(f"http://127.0.0.1:{port}/v3/events")[0] == 502  # the example's shards are not there
    finally:
        notify.close()
        code, out = stop(proc)
    assert code == 0, out
    assert "supervisor on" in out and "workers" in out


def test_sighup_while_workers_start_or_the_service_stops_changes_no_state_early(tmp_path):
    """A SIGHUP before the workers listen kills none and announces nothing;
    one during the stop gives no READY=1 after STOPPING=1."""
    port = listen_port()
    cfg = _config(tmp_path, port, 2)
    notify = NotifySocket(tmp_path)
    proc = twistd(tmp_path, "--config", str(cfg), extra_env={"NOTIFY_SOCKET": notify.path})
    try:
        lines = wait_for_line(proc, "supervisor on")  # the workers are being started
        proc.send_signal(signal.SIGHUP)
        ready = notify.expect("READY")  # the first state change is READY=1, for both
        assert "2 of 2 workers ready" in ready["STATUS"], ready
        assert get(f"http://127.0.0.1:{port}/livez")[0] == 200
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)
        proc.send_signal(signal.SIGHUP)
        notify.expect("STOPPING")
        out, _ = proc.communicate(timeout=30)
        with pytest.raises(TimeoutError):  # nothing after STOPPING=1 but STATUS
            while True:
                message = notify.next(timeout=0.3)
                assert set(message) == {"STATUS"}, message
    finally:
        if proc.poll() is None:
            for pid in [proc.pid, *children(proc.pid)]:
                os.kill(pid, signal.SIGKILL)
            proc.communicate()
        notify.close()
    out = "".join(lines) + out
    assert proc.returncode == 0, out
    assert "worker_restart" not in out and "ended" not in out  # no worker died of it
