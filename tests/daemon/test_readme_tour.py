"""The README's first minutes, exactly: every command of its tour, pasted
into bash against the demo that `twistd -n shardstream` starts, prints what
the README shows below it; and the demo's start-up message offers the tour's
first three commands."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from docexamples import examples, run
from processes import ROOT, TWISTD, env, get, stop, twistd, wait_for_line
from support import listen_port

NEEDS = ("curl", "jq")


@pytest.mark.skipif(any(shutil.which(t) is None for t in NEEDS),
                    reason=f"the tour's commands need {', '.join(NEEDS)} "
                           "(Debian packages, installed by .ci/run)")
def test_every_command_of_the_tour_prints_what_the_readme_shows(tmp_path):
    tour = examples(ROOT / "README.md", "A short tour")
    assert len(tour) >= 12 and all(e.output is not None for e in tour)
    port = listen_port()
    base = f"http://127.0.0.1:{port}"
    proc = twistd(tmp_path, "--listen", f"tcp:{port}:interface=127.0.0.1")
    try:
        lines = wait_for_line(proc, "more: README.md")
        message = [line.split("] ", 1)[1].strip() for line in lines if "#info] " in line]
        offered = [m for m in message if m.startswith(("curl", ".venv"))]
        # The start-up message's three commands are the tour's first three.
        assert offered == [e.command.strip().replace("http://127.0.0.1:8080", base)
                           for e in tour[:3]]
        replace = {"http://127.0.0.1:8080": base, ".venv/bin/python": sys.executable,
                   "--base-port 18301": f"--base-port {listen_port()}"}
        for example in tour:
            if "--base-port" in example.command:
                continue  # below: its ports are free ones, not the README's
            run(example, replace, ROOT, env(), "README.md")
    finally:
        code, out = stop(proc)
    assert code == 0, out
    assert not (tmp_path / "twistd.pid").exists()  # nothing left to break a second run


def test_the_demo_shards_alone_print_their_addresses(tmp_path):
    (example,) = [e for e in examples(ROOT / "README.md", "A short tour")
                  if "--base-port" in e.command]
    first = listen_port()
    shown = example.output.replace("18301", str(first)).replace("18302", str(first + 1))
    example.output = shown
    run(example, {".venv/bin/python": sys.executable, "18301": str(first)}, ROOT, env(),
        "README.md")


def test_a_second_foreground_start_is_not_stopped_by_a_stale_pidfile(tmp_path):
    """A twistd.pid naming a live process (its pid reused, as in a new
    container) makes twistd refuse to start; in the foreground none is used."""
    (tmp_path / "twistd.pid").write_text(str(os.getpid()))
    port = listen_port()
    proc = subprocess.Popen([*TWISTD, "-n", "shardstream", "--listen",
                             f"tcp:{port}:interface=127.0.0.1"], cwd=tmp_path, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = wait_for_line(proc, "more: README.md")
        # Serving (a SIGTERM before the reactor runs would kill it the hard way).
        assert get(f"http://127.0.0.1:{port}/livez")[0] == 200
    finally:
        code, out = stop(proc)
    assert code == 0, "".join(lines) + out
    assert (tmp_path / "twistd.pid").read_text() == str(os.getpid())  # not ours: untouched
