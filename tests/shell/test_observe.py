"""The ops-facing pieces on their own: JSON log lines and sd_notify datagrams."""

from __future__ import annotations

import io
import json
import socket

from twisted.logger import Logger
from twisted.python.failure import Failure

from shardstream.daemon.notify import PipeReporter, SystemdNotifier
from shardstream.observe.logs import event_as_json, json_observer


def _events() -> list[dict]:
    out = io.StringIO()
    log = Logger(namespace="shardstream.test", observer=json_observer(out))
    log.info("{n} items for {who}", n=3, who=b"bytes", event="access",
             shards_failed={"s2": "connect_refused"}, thing=object())
    try:
        1 / 0
    except ZeroDivisionError:
        log.failure("it broke", Failure(), event="oops")
    text = out.getvalue()
    assert "\x1e" not in text and text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_json_lines_carry_the_fields_and_the_message():
    first, second = _events()
    assert first["message"] == "3 items for b'bytes'" and first["level"] == "info"
    assert first["logger"] == "shardstream.test" and first["event"] == "access"
    assert first["n"] == 3 and first["who"] == "bytes"
    assert first["shards_failed"] == {"s2": "connect_refused"}
    assert "thing" not in first  # not JSON: left out, never a crash
    assert first["time"].endswith("+00:00") and isinstance(first["pid"], int)
    assert second["level"] == "critical" and "ZeroDivisionError" in second["traceback"]


def test_a_field_that_shadows_a_record_key_does_not_replace_it():
    line = event_as_json({"log_format": "x {message}", "message": "m", "log_level": None,
                          "log_time": 0, "time": "never"})
    record = json.loads(line)
    assert record["time"].startswith("1970-01-01") and record["message"] == "x m"


def test_sd_notify_to_a_path_and_to_an_abstract_socket(tmp_path):
    path = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path.bind(str(tmp_path / "n.sock"))
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    abstract.bind("\0shardstream-test-notify")
    for sock, address in ((path, str(tmp_path / "n.sock")), (abstract, "@shardstream-test-notify")):
        notifier = SystemdNotifier(address)
        notifier.reloading("reloading x")
        notifier.stopping("bye")
        sock.settimeout(2)
        fields = dict(line.split("=", 1) for line in sock.recv(4096).decode().splitlines())
        assert fields["RELOADING"] == "1" and int(fields["MONOTONIC_USEC"]) > 0
        assert fields["STATUS"] == "reloading x"
        assert sock.recv(4096) == b"STOPPING=1\nSTATUS=bye"
        sock.close()
    assert SystemdNotifier("").send("READY=1") is False  # not under systemd: nothing
    assert SystemdNotifier(str(tmp_path / "gone.sock")).send("READY=1") is False  # logged


def test_a_worker_reports_to_its_supervisor_one_word_a_line():
    import os

    r, w = os.pipe()
    reporter = PipeReporter(w)
    reporter.ready("x")
    reporter.reloading("x")  # the supervisor said it already
    reporter.reloaded(True, "x")
    reporter.reloaded(False, "x")
    reporter.stopping("x")
    os.close(w)
    assert os.read(r, 100) == b"ready\nreloaded\nrejected\nstopping\n"
    os.close(r)
