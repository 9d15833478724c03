"""The layout is the architecture: the core is sans-IO, importing the package
changes nothing process-wide, and the types check (strictly in the core)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"core", "web", "upstream", "observe", "daemon", "demo"}


def run_python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_package_is_its_layers_and_nothing_else():
    package = ROOT / "shardstream"
    folders = {p.name for p in package.iterdir() if p.is_dir() and p.name != "__pycache__"}
    loose = {p.name for p in package.glob("*.py")} - {"__init__.py"}
    assert folders == LAYERS and loose == set()
    assert (package / "py.typed").exists()


def test_importing_every_module_of_the_core_loads_no_twisted_module():
    loaded = run_python(
        "import importlib, json, pkgutil, sys\n"
        "import shardstream.core as core\n"
        "for m in pkgutil.walk_packages(core.__path__, 'shardstream.core.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(json.dumps(sorted(sys.modules)))\n")
    modules = json.loads(loaded)
    assert "shardstream.core.scatter" in modules and "shardstream.core.config" in modules
    assert [m for m in modules if m == "twisted" or m.startswith("twisted.")] == []
    assert [m for m in modules if m.startswith("shardstream.")
            and not m.startswith("shardstream.core")] == []


def test_importing_the_whole_package_changes_nothing_process_wide():
    """The int-digit limit and the chunked decoder are set when a service starts,
    and the metrics are made on first use."""
    out = run_python(
        "import importlib, pkgutil, sys\n"
        "import shardstream\n"
        "from twisted.web import _newclient\n"
        "before = _newclient.HTTPClientParser._transferDecoders[b'chunked']\n"
        "for m in pkgutil.walk_packages(shardstream.__path__, 'shardstream.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "after = _newclient.HTTPClientParser._transferDecoders[b'chunked']\n"
        "print(sys.get_int_max_str_digits(), after is before)\n"
        "print('prometheus_client' in sys.modules)\n"
        "from shardstream.daemon.startup import prepare_process\n"
        "prepare_process()\n"
        "now = _newclient.HTTPClientParser._transferDecoders[b'chunked']\n"
        "print(sys.get_int_max_str_digits(), now.__name__)\n")
    # prometheus_client is not imported either: a supervisor sets its
    # multiprocess directory first (shardstream.observe.metrics)
    assert out.split("\n")[:3] == ["4300 True", "False", "0 CoalescingChunkedDecoder"]


@pytest.mark.skipif(shutil.which("mypy") is None and not (Path(sys.executable).parent / "mypy").exists(),
                    reason="mypy is not installed (pip install '.[test]')")
def test_the_types_check():
    mypy = Path(sys.executable).parent / "mypy"
    out = subprocess.run([str(mypy) if mypy.exists() else "mypy"], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.skipif(not os.environ.get("SHARDSTREAM_REQUIRE_NATIVE"),
                    reason="set SHARDSTREAM_REQUIRE_NATIVE=1 (CI does) to require the extension")
def test_the_native_splitter_was_built():
    """CI tests the path production takes: items passed through as bytes."""
    from shardstream.core import split

    assert split.NATIVE, "shardstream/core/_splitter.c was not built (no C compiler?)"
