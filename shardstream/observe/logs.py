"""Log output: twisted.logger events as text lines or as JSON lines.

Our events carry their facts as fields (``request_id``, ``route``,
``status``, ``shards_failed`` ...), not only in the text, and an ``event``
field names the kind (access, startup, reload, drain, worker_restart ...).
``server.log_format = "json"`` writes one JSON object per line on stdout,
with no record separators, for journald and log shippers: time, level,
logger, message (the text line), pid, and every field that JSON can hold.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timezone
from typing import IO, Any

import orjson
from twisted.logger import (FileLogObserver, ILogObserver, formatEvent,
                            textFileLogObserver)

_PLAIN = (str, int, float, bool, type(None))


def _plain(value: Any, depth: int = 0) -> Any:
    """A JSON-able copy of a field's value, or None: leave it out."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if depth < 3 and isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    if depth < 3 and isinstance(value, dict):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    return None


def event_as_json(event: dict[str, Any]) -> str:
    record: dict[str, Any] = {
        "time": datetime.fromtimestamp(event.get("log_time", 0), timezone.utc)
        .isoformat(timespec="milliseconds"),
        "level": getattr(event.get("log_level"), "name", "info"),
        "logger": event.get("log_namespace", "-"),
        "message": formatEvent(event),
        "pid": os.getpid(),  # which worker
    }
    failure = event.get("log_failure")
    if failure is not None:
        record["error"] = failure.getErrorMessage()
        record["traceback"] = failure.getTraceback()
    for key, value in event.items():
        if key.startswith("log_") or key in record or key in ("format", "message"):
            continue
        plain = _plain(value)
        if plain is not None or value is None:
            record[key] = plain
    return orjson.dumps(record, default=str).decode() + "\n"


def json_observer(out: IO[str] | None = None) -> ILogObserver:
    """One JSON object per line, no record separators."""
    return FileLogObserver(out or sys.stdout, event_as_json)


def observer(log_format: str, out: IO[str] | None = None) -> ILogObserver:
    if log_format == "json":
        return json_observer(out)
    return textFileLogObserver(out or sys.stdout)




def attach(application: Any, log_format: str) -> None:
    """Make twistd log in ``log_format``: it uses the ILogObserver component
    of its application when it has one (twistd's --logger still wins)."""
    if log_format == "json":
        application.setComponent(ILogObserver, json_observer())
