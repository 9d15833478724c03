"""What ops see of a running service: metrics summed over its workers, JSON
logs, and no secret in any log line. Two workers serve real load in front
of a real shard (an HTTP server thread on loopback) and a dead one."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from processes import children, get, stop, twistd, wait_for_line
from support import free_port, listen_port, metric_samples

SECRET = "cursor-secret-that-must-never-be-logged"
PASSWORD = "hunter2-in-a-url"
SHARD_TOKEN = "shard-credential-never-logged"  # s1's upstream credential
ITEMS = 6


class _Shard(BaseHTTPRequestHandler):
    keys: list = []  # the X-Shard-Key of every request

    def do_GET(self) -> None:
        _Shard.keys.append(self.headers.get("X-Shard-Key"))
        body = json.dumps({"data": [{"id": i, "name": f"tour {i}"} for i in range(ITEMS)]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


def _shard() -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Shard)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _scrape(url: str) -> dict[tuple[str, tuple], float]:
    status, body = get(url)
    assert status == 200
    return metric_samples(body.decode())


def _config(tmp_path: Path, port: int, admin: int, shard: int, dead: int,
            extra: str = "") -> Path:
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        f'[server]\nlisten = "tcp:{port}:interface=127.0.0.1"\nworkers = 2\n'
        'log_format = "json"\n'
        f'[admin]\nlisten = "tcp:{admin}:interface=127.0.0.1"\n'
        f'[upstream]\nretries = 0\n'
        # s2 stays ejected for the whole test: on a busy host the 40 requests
        # took longer than the default 1 s, and a worker ejected it again.
        '[outlier]\nbase_ejection = 120\nmax_ejection = 120\n'
        '[cursor]\nsecret_env = "GW_SECRET"\n'
        f'[shards.s1]\nurls = ["http://127.0.0.1:{shard}"]\n'
        '[shards.s1.credentials]\nheader = "X-Shard-Key"\nvalue_env = "S1_TOKEN"\n'
        f'[shards.s2]\nurls = ["http://127.0.0.1:{dead}"]\n'
        '[[routes]]\npath = "/a"\nmode = "scatter"\nitems = "data.item"\n' + extra)
    return cfg


def _ready(admin: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if get(f"http://127.0.0.1:{admin}/livez")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("the admin endpoint never answered")


def test_one_scrape_sums_every_workers_metrics_and_the_logs_are_json_without_secrets(tmp_path):
    shard = _shard()
    port, admin = listen_port(), listen_port()
    cfg = _config(tmp_path, port, admin, shard.server_address[1], free_port())
    proc = twistd(tmp_path, "--config", str(cfg), extra_env={"GW_SECRET": SECRET,
                                                                   "S1_TOKEN": SHARD_TOKEN})
    lines: list[str] = []  # the whole log, for the checks at the end

    def wait(needle: str) -> None:
        lines.extend(wait_for_line(proc, needle))

    try:
        wait('"event":"startup"')
        _ready(admin)
        time.sleep(0.5)  # both workers listen (each binds the address itself)
        statuses, items, failed = [], 0, []
        n = 40
        for i in range(n):  # a new connection each: SO_REUSEPORT spreads them over the workers
            status, body = get(f"http://127.0.0.1:{port}/a", {"X-Request-ID": f"load-{i}"})
            statuses.append(status)
            doc = json.loads(body)
            items += len(doc["data"])
            failed += [(f["shard"], f["error"]) for f in doc["meta"]["shards"]["failed"]]
        assert statuses == [200] * n and items == n * ITEMS
        # s2 is refused until outlier detection ejects it (in each worker)
        seen = Counter(failed)
        assert sum(seen.values()) == n and set(seen) == {("s2", "connect_refused"),
                                                         ("s2", "no_healthy_replica")}
        # the admin paths are not on the partner-facing endpoint
        assert get(f"http://127.0.0.1:{port}/metrics")[0] == 404
        url = f"http://127.0.0.1:{admin}/metrics"
        for _ in range(6):  # whichever worker answers, it tells the same sums
            m = _scrape(url)
            assert m[("shardstream_requests_total",
                      (("code", "2xx"), ("method", "GET"), ("route", "/a")))] == n
            assert m[("shardstream_shard_items_total", (("shard", "s1"),))] == items
            for (shard_name, error), count in seen.items():
                assert m[("shardstream_shard_failures_total",
                          (("error", error), ("shard", shard_name)))] == count
            assert m[("shardstream_replica_ejections_total",
                      (("replica", "0"), ("shard", "s2")))] == 2  # once in each worker
            assert m[("shardstream_replica_available", (("replica", "0"), ("shard", "s2")))] == 0
            assert m[("shardstream_shard_attempts_total",
                      (("outcome", "ok"), ("shard", "s1")))] == n
            assert m[("shardstream_time_to_first_item_seconds_count", (("route", "/a"),))] == n
            assert m[("shardstream_streams_in_flight", (("route", "/a"),))] == 0

        # a reload taken, and one rejected (its error names a URL with a password)
        proc.send_signal(signal.SIGHUP)
        wait("reload finished")
        cfg.write_text(cfg.read_text() + f'[shards.s3]\nurls = ["http://ops:{PASSWORD}@h:1"]\n')
        proc.send_signal(signal.SIGHUP)
        wait("reload rejected")
        m = _scrape(url)  # counted before either line was logged
        assert m[("shardstream_reloads_total", (("result", "taken"),))] == 1
        assert m[("shardstream_reloads_total", (("result", "rejected"),))] == 1
        assert m[("shardstream_config_generation", ())] == 2
        metrics_dir = next(json.loads(line)["metrics_dir"] for line in lines
                           if '"metrics_dir"' in line)

        # a worker dies: it is started again, and its counts stay in the sums
        victim = sorted(children(proc.pid))[0]
        assert [f for f in os.listdir(metrics_dir)
                if f.startswith("gauge_live") and f"_{victim}." in f]  # it has live gauges
        os.kill(victim, signal.SIGKILL)
        wait('"event":"worker_restart"')
        deadline = time.monotonic() + 15  # it is started again after a short pause
        while len(children(proc.pid) - {victim}) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert victim not in children(proc.pid) and len(children(proc.pid)) == 2
        _ready(admin)
        files = os.listdir(metrics_dir)
        assert f"counter_{victim}.db" in files  # its counts stay in the sums ...
        assert not [f for f in files if f.startswith("gauge_live") and f"_{victim}." in f]
        m = _scrape(url)
        assert m[("shardstream_requests_total",
                  (("code", "2xx"), ("method", "GET"), ("route", "/a")))] == n
    finally:
        code, out = stop(proc)
        shard.shutdown()
    assert code == 0, out
    lines += out.splitlines(keepends=True)
    out = "".join(lines)
    records = [json.loads(line) for line in lines if line.strip()]  # every line is JSON
    assert "\x1e" not in out  # no record separators
    access = [r for r in records if r.get("event") == "access"]
    load = [r for r in access if r["request_id"].startswith("load-")]
    assert len(load) == n
    assert len({r["pid"] for r in load}) == 2  # both workers served, and both were counted
    first = load[0]
    assert first["route"] == "/a" and first["status"] == 200 and first["method"] == "GET"
    assert first["shards_asked"] == 2 and first["shards_failed"] == {"s2": "connect_refused"}
    assert Counter((shard_name, error) for r in load
                   for shard_name, error in r["shards_failed"].items()) == seen
    assert first["items"] == ITEMS and first["bytes"] > 0
    assert 0 < first["first_item_seconds"] <= first["duration_seconds"]
    assert len(first["trace_id"]) == 32
    events = {r.get("event") for r in records}
    assert {"startup", "reload", "reload_rejected", "worker_restart", "drain"} <= events
    reload = next(r for r in records if r.get("event") == "reload" and "changed" in r)
    assert reload["changed"] == [] and reload["generation"] == 2
    assert not os.path.exists(metrics_dir)  # cleaned at the end
    assert SECRET not in out and PASSWORD not in out and SHARD_TOKEN not in out
    assert set(_Shard.keys) == {SHARD_TOKEN}  # it was in use all along
