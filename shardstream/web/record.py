"""What is known of one client request, and what is said of it when it ends.

A :class:`Record` rides on the request from its headers on; the mode's
response adds the shards' outcome. When the request ends (finished,
answered, aborted, or the client gone) :func:`ended` makes one access-log
event, with its fields for the JSON log, and records the request's metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from twisted.logger import Logger

from ..core.config import HTTP_METHODS
from ..core.outcome import Outcome
from ..observe.metrics import metrics, status_class

log = Logger(namespace="shardstream.access")

ACCESS = ('{client} "{method} {uri} {protocol}" {status} {bytes} request_id={request_id} '
          'trace_id={trace_id} partner={partner} route={route} shards={shards_asked} failed={failed_shards} '
          'items={items} first_item={first_item_seconds} duration={duration_seconds} '
          'outcome={outcome}')


@dataclass
class Record:
    started: float
    route: str  # the route's path template, "admin", or "unmatched": bounded, no partner data
    method: str  # as received (the metrics' label is bounded: see _method)
    uri: str
    first: float | None = None  # when the first item (the first body byte) went out
    outcome: Callable[[], Outcome] | None = None  # set by the mode's response
    cut: bool = False  # the gateway aborted the connection (a strict list that failed)
    partner: Any = None  # the API key's partner, with [auth]
    on_end: list[Callable[[], None]] = field(default_factory=list)  # e.g. a stream's slot
    done: bool = False


def started(now: float, route: str, method: bytes, uri: bytes) -> Record:
    record = Record(started=now, route=route, method=method.decode("ascii", "replace"),
                    uri=uri.decode("ascii", "replace"))
    m = metrics()
    m.child(m.in_flight, route).inc()
    return record


def recorded(request: Any, outcome: Callable[[], Outcome]) -> None:
    """The mode's response tells the record where to learn the shards' part."""
    record = getattr(request, "record", None)
    if record is not None:
        record.outcome = outcome


def cut(request: Any) -> None:
    """The gateway is aborting this request's connection (a failure after
    its response began): the record ends as ``aborted``."""
    record = getattr(request, "record", None)
    if record is not None:
        record.cut = True


def known_method(method: str) -> str:
    return method if method in HTTP_METHODS else "other"  # a client's typo is no new series


def ended(request: Any, record: Record, now: float, outcome: str, access_log: bool) -> None:
    """Once per request: its metrics, and its access-log event.

    ``outcome``: completed, aborted (by the gateway: a list cut after its
    start), or client_gone. A request that did not complete is counted under
    that word instead of a status class, so an answer never sent is not 2xx.
    Never raises: it runs inside twisted.web's ``finish``."""
    if record.done:
        return
    record.done = True
    m = metrics()
    route = record.route
    m.child(m.in_flight, route).dec()
    for release in record.on_end:
        release()
    try:
        _ended(request, record, now, outcome, access_log, m)
    except Exception:
        log.failure("internal error while recording {method} {uri} (request {request_id})",
                    method=record.method, uri=record.uri,
                    request_id=getattr(request, "request_id", b""))


def _ended(request: Any, record: Record, now: float, outcome: str, access_log: bool,
           m: Any) -> None:
    shards = record.outcome() if record.outcome is not None else Outcome()
    route = record.route
    code = request.code
    m.child(m.requests, route, known_method(record.method),
                      status_class(code) if outcome == "completed" else outcome).inc()
    duration = now - record.started
    m.child(m.duration, route).observe(duration)
    first = None if record.first is None else record.first - record.started
    if first is not None:
        m.child(m.first_item, route).observe(first)
    sent = request.sentLength
    if sent:
        m.child(m.bytes, route).inc(sent)
    for shard, error in shards.failed.items():
        m.child(m.failures, shard, error).inc()
    for shard, n in shards.items.items():
        if n:
            m.child(m.items, shard).inc(n)
    if not access_log:
        return
    trace = getattr(request, "trace", None)
    address = request.getClientAddress()
    log.info(
        ACCESS,
        event="access",
        client=getattr(address, "host", None) or "-",  # a unix socket's peer has none
        method=record.method,
        uri=record.uri.replace('"', "%22"),  # the line stays parseable
        protocol=request.clientproto.decode("ascii", "replace"),
        status=code if request.startedWriting else None,
        bytes=sent,
        request_id=request.request_id.decode("ascii"),
        partner=record.partner.name if record.partner is not None else None,
        trace_id=trace.trace_id.decode("ascii") if trace is not None else None,
        route=route,
        shards_asked=shards.asked,
        shards_failed=shards.failed,
        failed_shards=",".join(f"{s}:{e}" for s, e in shards.failed.items()) or "-",
        items=sum(shards.items.values()),
        first_item_seconds=None if first is None else round(first, 6),
        duration_seconds=round(duration, 6),
        outcome=outcome,
    )
