"""The gateway's Prometheus metrics, with prometheus_client.

One :class:`Metrics` per process, made on first use (:func:`metrics`), never
on import: with workers, the supervisor sets ``PROMETHEUS_MULTIPROC_DIR``
before anything imports prometheus_client, so every process writes its
values to files there and any of them can answer a scrape with the sum
(prometheus_client's multiprocess mode). Labels name routes (their path
templates), shards, replicas (their index) and outcomes, never partner data
or item ids, so their number is bounded by the config.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Time to first item and to the end of a response: streaming puts the first
# well below the second, so both scales reach from a millisecond to a minute.
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0)


def status_class(code: int) -> str:
    return f"{code // 100}xx" if 100 <= code < 600 else "other"


class Metrics:
    """Every metric the gateway records."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        p = "shardstream_"
        self.requests = Counter(p + "requests_total", "Client requests answered, by route "
                                "(path template), method and status class",
                                ["route", "method", "code"])
        self.first_item = Histogram(p + "time_to_first_item_seconds", "From the request's "
                                    "headers to the first item (or first body byte) sent",
                                    ["route"], buckets=_LATENCY)
        self.duration = Histogram(p + "request_duration_seconds", "From the request's "
                                  "headers to the response's end", ["route"], buckets=_LATENCY)
        self.in_flight = Gauge(p + "streams_in_flight", "Responses being sent now",
                               ["route"], multiprocess_mode="livesum")
        self.bytes = Counter(p + "response_bytes_total", "Body bytes sent to clients",
                             ["route"])
        self.attempts = Counter(p + "shard_attempts_total", "Requests to a shard's replicas, "
                                "by outcome: ok, retried (another replica was tried next), "
                                "cancelled (not needed any more), or the failure's error code",
                                ["shard", "outcome"])
        self.failures = Counter(p + "shard_failures_total", "Shards reported failed to "
                                "clients (meta.shards.failed or an error answer), by error",
                                ["shard", "error"])
        self.headers = Histogram(p + "shard_response_headers_seconds", "From the start of an "
                                 "attempt to its response headers", ["shard"], buckets=_LATENCY)
        self.items = Counter(p + "shard_items_total", "List items delivered to clients",
                             ["shard"])
        self.available = Gauge(p + "replica_available", "1 while a replica may be sent "
                               "requests (not ejected, passing its health checks); with "
                               "workers, the lowest of their views", ["shard", "replica"],
                               multiprocess_mode="livemin")
        self.ejections = Counter(p + "replica_ejections_total", "Replicas ejected by outlier "
                                 "detection", ["shard", "replica"])
        self.checks = Counter(p + "health_checks_total", "Active health checks, by result",
                              ["shard", "replica", "result"])
        self.budget = Counter(p + "retry_budget_exhausted_total", "Retries not made because "
                              "the shard's retry budget was spent", ["shard"])
        self.limited = Counter(p + "rate_limited_total", "Partner requests refused by a limit: "
                               "rate (429), concurrency (429), redis_down (503, with "
                               "on_redis_down = closed)", ["reason"])
        self.unlimited = Counter(p + "rate_limit_unchecked_total", "Partner requests let "
                                 "through unlimited because Redis did not answer in time "
                                 "(on_redis_down = open)")
        self.redis_up = Gauge(p + "rate_limit_redis_up", "1 while the rate limits' Redis "
                              "answers, 0 while it does not (absent with the local backend)",
                              multiprocess_mode="livemin")
        self.directory_redis_up = Gauge(p + "directory_redis_up", "1 while a Redis shard "
                                        "directory answers, 0 while it does not",
                                        ["kind"], multiprocess_mode="livemin")
        self.directory_lookups = Counter(p + "directory_lookups_total", "Owner lookups "
                                         "memory could not answer, by result: fetched (asked "
                                         "Redis), found (asked every shard), failed (Redis "
                                         "did not answer)",
                                         ["kind", "result"])
        self.placements = Counter(p + "directory_placements_total", "New keys placed on a "
                                  "shard, by how (hash, fixed) and shard", ["kind", "how",
                                                                            "shard"])
        self.directory_keys = Gauge(p + "directory_keys", "Keys in a file or inline directory",
                                    ["kind"], multiprocess_mode="livemax")
        self.foreign_items = Counter(p + "foreign_items_dropped_total", "List items dropped "
                                     "because the directory puts their tenant on another "
                                     "shard (a tenant being moved, or its leftovers)",
                                     ["route", "shard"])
        self.moving_writes = Counter(p + "tenant_moving_writes_total", "Writes refused with "
                                     "503 because their tenant is being moved", ["kind"])
        self.reloads = Counter(p + "reloads_total", "Config reloads, by result (taken, "
                               "rejected)", ["result"])
        self.generation = Gauge(p + "config_generation", "Configs taken since start (1: the "
                                "first)", multiprocess_mode="livemax")
        self.info = Gauge(p + "build_info", "Versions, always 1",
                          ["version", "python", "twisted"], multiprocess_mode="livemax")
        from twisted import __version__ as twisted_version

        from .. import __version__
        self.info.labels(__version__, platform.python_version(), twisted_version).set(1)
        self.generation.set(1)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, kept: a request touches a dozen series, and
        prometheus_client validates and looks the labels up under a lock every call.
        The series are bounded by the config (the module's docstring), so is this."""
        key = (id(metric), values)
        series = self._children.get(key)
        if series is None:
            series = self._children[key] = metric.labels(*values)
        return series

    def exposition(self) -> bytes:
        """The text a scrape gets: this process's metrics, or every worker's summed."""
        from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        directory = os.environ.get(MULTIPROC_ENV)
        if not directory:
            return bytes(generate_latest(REGISTRY))
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)
        return bytes(generate_latest(registry))


_metrics: Metrics | None = None


def metrics() -> Metrics:
    """This process's metrics, made on first use."""
    global _metrics
    if _metrics is None:
        _metrics = Metrics()
    return _metrics


def shared_directory() -> str:
    """Make a fresh directory for the workers' metric files, and use it here.

    Called by the supervisor before anything in its process touched
    prometheus_client; the workers inherit the variable."""
    import sys

    if "prometheus_client.values" in sys.modules:  # too late: it chose in-process values
        raise RuntimeError("prometheus_client was imported before its multiprocess directory "
                           "was set")
    directory = tempfile.mkdtemp(prefix="metrics-", dir=os.environ.get("RUNTIME_DIRECTORY"))
    os.environ[MULTIPROC_ENV] = directory
    return directory


def process_ended(pid: int) -> None:
    """A worker died: drop its live gauges (its counters stay in the sums)."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, directory)


def remove_directory(directory: str) -> None:
    shutil.rmtree(directory, ignore_errors=True)
