"""The shard directory in a real Redis: owners changed under two running
gateways, new tenants placed through both at once, Redis stopped mid-run."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import tomli_w

from processes import env, get, redis_server, stop, twistd, wait_for_line
from support import free_port, listen_port, metric_samples

pytestmark = pytest.mark.skipif(not shutil.which("redis-server"),
                                reason="redis-server (Debian package redis-server) is missing")
TTL = 0.5


@pytest.fixture
def shards():
    proc = subprocess.Popen([sys.executable, "-m", "shardstream.demo", "--fast"], env=env(),
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("SHARDS "), line
    yield dict(part.split("=", 1) for part in line.split()[1:])
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)


def _gateway(tmp_path: Path, name: str, shards: dict, redis: int) -> tuple[int, subprocess.Popen]:
    port = listen_port()
    data = {"server": {"listen": f"tcp:{port}:interface=127.0.0.1", "access_log": False},
            "shards": {n: {"urls": [u]} for n, u in shards.items()},
            "directory": {"vendor_id": {"redis_url": f"redis://127.0.0.1:{redis}/0",
                                        "cache_ttl": TTL, "timeout": 0.2, "unknown": "find"}},
            "routes": [{"path": "/echo/{vendor_id}", "mode": "route", "shard_key": "vendor_id",
                        "placement": "hash"}]}
    (tmp_path / f"{name}.toml").write_bytes(tomli_w.dumps(data).encode())
    proc = twistd(tmp_path, "--config", str(tmp_path / f"{name}.toml"))
    wait_for_line(proc, "listening on")
    return port, proc


def _shard(port: int, key: str, method: str = "GET") -> tuple[int, str | None]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/echo/{key}", method=method,
                                     data=b"{}" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.headers.get("x-shard")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _cli(port: int, *args: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True,
                          text=True, timeout=10, check=True).stdout.strip()


def test_owners_in_redis_change_under_two_gateways_and_survive_redis_stopping(tmp_path, shards):
    if not shutil.which("redis-cli"):
        pytest.skip("redis-cli (Debian package redis-tools) is missing")
    names = sorted(shards)
    redis_port = free_port()
    redis = redis_server(tmp_path, redis_port)
    _cli(redis_port, "HSET", "shardstream:vendor_id", "v1", names[0])
    (a, pa), (b, pb) = _gateway(tmp_path, "a", shards, redis_port), \
        _gateway(tmp_path, "b", shards, redis_port)
    try:
        assert _shard(a, "v1") == (200, names[0]) and _shard(b, "v1") == (200, names[0])
        # ops change the owner in Redis: every gateway follows within the TTL
        _cli(redis_port, "HSET", "shardstream:vendor_id", "v1", names[1])
        changed = time.monotonic()
        seen = {}
        while len(seen) < 2 and time.monotonic() - changed < 5:
            for port in (a, b):
                if port not in seen and _shard(port, "v1") == (200, names[1]):
                    seen[port] = time.monotonic() - changed
            time.sleep(0.02)
        assert len(seen) == 2 and max(seen.values()) <= TTL + 0.3, seen

        # new tenants placed through both gateways at once: one answer, recorded once
        keys = [f"new{n}" for n in range(20)]
        with ThreadPoolExecutor(8) as pool:
            placed = list(pool.map(lambda kp: (kp[0], kp[1], _shard(kp[1], kp[0], "POST")),
                                   [(k, p) for k in keys for p in (a, b)]))
        by_key: dict[str, set] = {}
        for key, _, (status, shard) in placed:
            assert status == 200, shard
            by_key.setdefault(key, set()).add(shard)
        for key, answered in by_key.items():
            assert len(answered) == 1, (key, answered)
            assert _cli(redis_port, "HGET", "shardstream:vendor_id", key) in answered
        assert len({s for answered in by_key.values() for s in answered}) > 1  # spread

        # Redis stops: what the caches hold keeps serving; unknown keys ask every shard
        redis.terminate()
        redis.wait(timeout=10)
        time.sleep(TTL + 0.1)  # past the TTL: lookups go to Redis, which is gone
        assert _shard(a, "v1") == (200, names[1])
        assert _shard(a, "new3") == (200, next(iter(by_key["new3"])))
        status, shard = _shard(a, "never-seen")
        assert status == 200 and shard in names  # "find": some shard answered
        status, body = _shard(b, "brand-new", "POST")
        assert status == 503 and "directory_unavailable" in body
        m = metric_samples(get(f"http://127.0.0.1:{a}/metrics")[1].decode())
        assert m[("shardstream_directory_redis_up", (("kind", "vendor_id"),))] == 0

        # Redis returns (empty): the gateways recover by themselves
        redis = redis_server(tmp_path, redis_port)
        _cli(redis_port, "HSET", "shardstream:vendor_id", "v1", names[2])
        deadline = time.monotonic() + 5
        while _shard(a, "v1") != (200, names[2]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _shard(a, "v1") == (200, names[2])
    finally:
        outs = [stop(pa), stop(pb)]
        redis.terminate()
        redis.wait(timeout=10)
    for code, out in outs:
        assert code == 0, out
        assert "Traceback" not in out, out
        assert out.count("does not answer (no answer in time)") == 1, out  # said once
    assert "answers again" in outs[0][1]  # a asked again once Redis was back
