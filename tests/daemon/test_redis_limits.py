"""Rate limits shared through a real Redis: two gateway processes, one bucket;
Redis stopped and started again under them."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from processes import env, get, redis_server, stop, twistd, wait_for_line
from support import free_port, listen_port, metric_samples

pytestmark = pytest.mark.skipif(not shutil.which("redis-server"),
                                reason="redis-server (Debian package redis-server) is missing")

def _key(tmp_path: Path, *limits: str) -> str:
    """A key of partner acme for route /a, with ``limits`` (shardstream-keys options)."""
    out = subprocess.run([sys.executable, "-m", "shardstream.daemon.keys_cli", "add", "--file",
                          str(tmp_path / "keys.toml"), "--partner", "acme", "--scope", "/a",
                          *limits], env=env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()[-1]


def _gateway(tmp_path: Path, name: str, redis: int, down: str = "open",
             admin: int | None = None, shard: str | None = None
             ) -> tuple[int, subprocess.Popen]:
    port = listen_port()
    shard = shard or f"http://127.0.0.1:{free_port()}"  # none: a dead one
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(
        f'[server]\nlisten = "tcp:{port}:interface=127.0.0.1"\n'
        + (f'[admin]\nlisten = "tcp:{admin}:interface=127.0.0.1"\n' if admin else "")
        + f'[auth]\nkeys_file = "{tmp_path / "keys.toml"}"\n'
        f'[rate_limit]\nbackend = "redis"\nredis_url = "redis://127.0.0.1:{redis}/0"\n'
        f'on_redis_down = "{down}"\ntimeout = 0.2\n'
        f'[shards.s1]\nurls = ["{shard}"]\n'
        '[[routes]]\npath = "/a"\nmode = "scatter"\nitems = "data.item"\n')
    proc = twistd(tmp_path, "--config", str(cfg))
    wait_for_line(proc, "listening on")
    assert get(f"http://127.0.0.1:{port}/openapi.json")[0] == 200  # the reactor runs: SIGHUP is heard
    return port, proc


def _ask(port: int, key: str) -> tuple[int, dict]:
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}/a",
                                     headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}


def test_two_gateways_share_one_bucket_and_survive_redis_going_away(tmp_path):
    redis_port = free_port()
    redis = redis_server(tmp_path, redis_port)
    key = _key(tmp_path, "--rate", "1", "--burst", "5")
    admin = listen_port()
    (a, pa), (b, pb) = (_gateway(tmp_path, "a", redis_port, admin=admin),
                        _gateway(tmp_path, "b", redis_port))
    try:
        started = time.monotonic()
        answers = [_ask(port, key) for _ in range(10) for port in (a, b)]
        elapsed = time.monotonic() - started
        allowed = sum(1 for status, _ in answers if status != 429)
        # one bucket of 5 (plus what 1/s refilled meanwhile), not 5 in each gateway
        assert 5 <= allowed <= 5 + int(elapsed) + 1 < 10, (allowed, elapsed)
        assert all("ratelimit" in h and "ratelimit-policy" in h for _, h in answers)
        denied = [h for status, h in answers if status == 429]
        assert denied and all(int(h["retry-after"]) >= 1 for h in denied)

        redis.terminate()
        redis.wait(timeout=10)
        statuses = [_ask(a, key)[0] for _ in range(8)]  # open: served, unlimited
        assert set(statuses) == {502}, statuses  # past the gateway: the shard is down
        m = metric_samples(get(f"http://127.0.0.1:{admin}/metrics")[1].decode())
        assert m[("shardstream_rate_limit_redis_up", ())] == 0
        assert m[("shardstream_rate_limit_unchecked_total", ())] >= 8

        redis = redis_server(tmp_path, redis_port)  # back: limits hold again, by themselves
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "ratelimit" not in _ask(a, key)[1]:
            time.sleep(0.2)
        assert "ratelimit" in _ask(a, key)[1]
    finally:
        code_a, out_a = stop(pa)
        code_b, out_b = stop(pb)
        redis.terminate()
        redis.wait(timeout=10)
    assert code_a == 0 and code_b == 0, out_a + out_b
    assert out_a.count("does not answer") == 1  # the change of state, logged once
    assert out_a.count("answers again") == 1
    assert key not in out_a + out_b


def test_closed_refuses_with_503_while_redis_is_down(tmp_path):
    key = _key(tmp_path, "--rate", "100", "--burst", "100")
    port, proc = _gateway(tmp_path, "c", free_port(), down="closed")  # no Redis there
    try:
        status, headers = _ask(port, key)
        assert status == 503 and headers["retry-after"] == "1"
    finally:
        code, out = stop(proc)
    assert code == 0, out


def test_list_streams_are_capped_across_gateways_through_redis(tmp_path):
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # half a list, a pause, the rest
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"data": [{"id": 1},')
            self.wfile.flush()
            time.sleep(1.5)
            self.wfile.write(b' {"id": 2}]}')

        def log_message(self, *args: object) -> None:
            pass

    shard = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=shard.serve_forever, daemon=True).start()
    redis_port = free_port()
    redis = redis_server(tmp_path, redis_port)
    # A token comes back every 20 s: none during the test, however slow the host.
    key = _key(tmp_path, "--concurrency", "1", "--rate", "0.05", "--burst", "50")
    gateways = []
    for name in ("a", "b"):
        gateways.append(_gateway(tmp_path, name, redis_port))
    try:
        (a, _), (b, _) = gateways
        # point both at the slow shard (the config's own shard is a dead one)
        for name, (port, proc) in zip("ab", gateways):
            cfg = tmp_path / f"{name}.toml"
            text = cfg.read_text()
            dead = text.split('[shards.s1]\nurls = ["')[1].split('"')[0]
            cfg.write_text(text.replace(dead, f"http://127.0.0.1:{shard.server_address[1]}"))
            proc.send_signal(signal.SIGHUP)
            wait_for_line(proc, "reloaded")
        streaming = socket.create_connection(("127.0.0.1", a), timeout=10)
        streaming.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                          + key.encode() + b"\r\n\r\n")
        assert b"200" in streaming.recv(100)  # a list stream in flight on gateway a ...
        status, fields = _ask(b, key)
        assert status == 429  # ... counts on gateway b too
        # and says where the bucket stands: one token taken (a's), none for this refusal
        assert fields["ratelimit-policy"] == '"default";q=50;w=1000'
        assert fields["ratelimit"].split(";")[1] == "r=49", fields
        streaming.close()  # the client leaves: its slot goes back, through Redis
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and status == 429:
            time.sleep(0.2)
            status, _ = _ask(b, key)
        assert status == 200
    finally:
        for port, proc in gateways:
            stop(proc)
        redis.terminate()
        redis.wait(timeout=10)
        shard.shutdown()


def _slow_shard() -> Any:
    """A shard whose list comes in two halves, its ``delay`` seconds apart (a stream
    in flight meanwhile)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"data": [{"id": 1},')
            self.wfile.flush()
            time.sleep(self.server.delay)  # type: ignore[attr-defined]
            try:
                self.wfile.write(b' {"id": 2}]}')
            except OSError:
                pass  # the gateway's client left, and the gateway with it

        def log_message(self, *args: object) -> None:
            pass

    shard = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    shard.daemon_threads = True
    shard.delay = 0.0  # type: ignore[attr-defined]
    threading.Thread(target=shard.serve_forever, daemon=True).start()
    return shard


def _open_stream(port: int, key: str) -> Any:
    """A list stream started on the gateway at ``port``: the socket, once its status came."""
    import socket

    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key.encode()
              + b"\r\n\r\n")
    head = s.recv(100)
    assert head.startswith(b"HTTP/1.1 200"), head
    return s


def _zcard(port: int, key: str) -> int:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"ZCARD {key}\r\n".encode())
        reply = s.recv(64)
    assert reply.startswith(b":"), reply
    return int(reply[1:].split(b"\r\n")[0])


def _soon(what: Callable[[], bool], seconds: float, every: float = 0.05) -> bool:
    deadline = time.monotonic() + seconds
    while not what() and time.monotonic() < deadline:
        time.sleep(every)
    return what()


# Frozen for less than txredisapi's reply timeout (0.8 s here: the late answers
# come), and for longer (the connections are dropped and made again meanwhile,
# but Redis still runs the scripts it had received).
@pytest.mark.parametrize("pause", [0.5, 4.0])
def test_checks_given_up_while_redis_is_frozen_leave_no_slot_held(tmp_path, pause):
    """Redis frozen (SIGSTOP) under two list-stream checks: the gateway gives up on
    them (open: served unlimited), but Redis runs their scripts once it thaws. The
    slots those took are given back at once, not when they expire."""
    shard = _slow_shard()
    redis_port = free_port()
    redis = redis_server(tmp_path, redis_port)
    key = _key(tmp_path, "--concurrency", "2", "--rate", "1000", "--burst", "1000")
    port, proc = _gateway(tmp_path, "a", redis_port,
                          shard=f"http://127.0.0.1:{shard.server_address[1]}")

    def count() -> int:  # the partner's slots held in Redis
        return _zcard(redis_port, "shardstream:streams:acme")

    try:
        assert "ratelimit" in _ask(port, key)[1]  # checked through Redis
        assert _soon(lambda: count() == 0, 5)
        shard.delay = 1.0
        redis.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            frozen = [_open_stream(port, key) for _ in range(2)]  # given up on: unlimited
            for s in frozen:
                s.close()
            time.sleep(max(0.0, pause - (time.monotonic() - started)))
        finally:
            redis.send_signal(signal.SIGCONT)
        thawed = time.monotonic()
        # the slots' lease is 30 s (and was an hour): this is them given back
        assert _soon(lambda: count() == 0, 3), count()
        assert time.monotonic() - thawed < 3
        # once Redis answers the checks again, both slots are the partner's, and no more
        shard.delay = 0.0
        assert _soon(lambda: "ratelimit" in _ask(port, key)[1], 15, every=0.2)
        shard.delay = 5.0
        held = [_open_stream(port, key) for _ in range(2)]
        assert count() == 2
        status, _ = _ask(port, key)
        assert status == 429
        for s in held:
            s.close()
        assert _soon(lambda: count() == 0, 5), count()
    finally:
        redis.send_signal(signal.SIGCONT)
        code, out = stop(proc)
        redis.terminate()
        redis.wait(timeout=10)
        shard.shutdown()
    assert code == 0, out
    assert out.count("does not answer") == 1 and out.count("answers again") == 1, out
