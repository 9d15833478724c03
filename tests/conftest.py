"""Shared by every test: the helpers in this folder are importable from any
subfolder (``from support import ...``), and the process-wide set-up the
gateway makes when its service starts is made once for the tests that drive
the core and the shell directly."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from shardstream.daemon.startup import prepare_process  # noqa: E402

prepare_process()
