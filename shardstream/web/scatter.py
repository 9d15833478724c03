"""The Twisted side of a scatter request: it feeds the core's
:class:`~shardstream.core.scatter.Scatter` with shard and client events and
carries out the actions it returns.

Nothing is decided here. One balanced shard call per shard reports through a
:class:`~shardstream.upstream.sink.Tagged` sink; the client's transport
drives this push producer; the actions (pause, resume, cancel a call,
commit, write, finish, answer, abort, call back at the end of the turn) run
in the order the core gave them. An action can make Twisted call back into
here at once (a write that fills the client's buffer pauses us; a resumed
call can end inside ``resume``): those actions join the same queue, behind
the ones already given, so the order the core decided is the order of
execution.
"""

from __future__ import annotations

import math
from collections import deque
from urllib.parse import parse_qs
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.logger import Logger
from twisted.web.iweb import IResponse
from twisted.web.server import Request
from zope.interface import implementer

from ..core import paging, split
from ..core.config import Config, Route
from ..core.directory import Pending
from ..core.errors import ClientError, ShardError
from ..observe.metrics import metrics
from ..core.scatter import (Abort, Action, Answer, Cancel, Commit, Finish, Later, Pause, Resume,
                            Write, scatter_for)
from ..upstream.balancer import BalancedCall
from ..upstream.sink import Tagged
from . import record as record_mod
from .errors import cut_response, send_json
from .headers import upstream_request_headers, with_new_span

if TYPE_CHECKING:
    from .gateway import Gateway

log = Logger(namespace="shardstream")


class ListOwnersChanged(ClientError):
    status = 409
    code = "cursor_owners_changed"


def target_keys(route: Route, args: Mapping[bytes, list[bytes]],
                params: Mapping[str, str]) -> list[str]:
    """The shard keys a list names: its path parameter, or its query
    parameter (``?vendor_id=v1,v2``, or repeated). None named: every shard."""
    name = paging.options(route).target_param
    if name is None:
        return []
    if name in params:
        return [params[name]]
    keys = []
    for value in args.get(name.encode(), []):
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            raise paging.BadListQuery(f"{name} is not valid UTF-8") from None
        keys += [k for k in text.split(",") if k]
    return keys


def query_args(query: str) -> dict[bytes, list[bytes]]:
    """A raw query string's parameters as bytes, as twisted.web's ``request.args``
    (percent-escapes decoded to bytes, whatever they encode)."""
    return {k.encode("latin-1"): [v.encode("latin-1") for v in vs]
            for k, vs in parse_qs(query, encoding="latin-1").items()}


def _targets(gateway: "Gateway", route: Route, args: Mapping[bytes, list[bytes]],
             params: Mapping[str, str]) -> list[str]:
    """The shards to ask: the owners of the keys the list names, or all."""
    every = list(gateway.config.shard_names)
    keys = target_keys(route, args, params)
    if not keys:
        return every
    found = gateway.router.targets(paging.options(route).target_param or "", keys)
    return every if found is None else found


def _foreign(gateway: "Gateway", route: Route) -> Callable[[str, Any], bool] | None:
    """While tenants move: is an item of a shard another shard's? The core
    reads its ``owner_field`` (its tenant); the directory names the owner."""
    field = paging.options(route).owner_field
    if field is None:
        return None
    kind = field.text
    directory = gateway.directory
    dropped = metrics().foreign_items
    label = route.path.text

    def foreign(shard: str, key: Any) -> bool:
        if key is None or isinstance(key, (dict, list, bool)):
            return False
        try:
            owner = directory.lookup(kind, str(key))
        except Pending as e:  # not in memory (Redis): kept, and looked up for the next time
            directory.resolve(e).addErrback(lambda f: None)
            return False
        if owner is None or owner.shard == shard:
            return False
        dropped.labels(label, shard).inc()
        return True

    return foreign


def empty_page_retry_after(config: Config) -> int:
    """Seconds before an empty page of failed shards is worth asking again:
    an ejected replica is tried again after the base ejection time."""
    return max(1, math.ceil(config.outlier.base_ejection))


@implementer(IPushProducer)
class ScatterResponse:
    """One list request. Raises paging.BadListQuery (400) before any shard is asked."""

    def __init__(self, request: Request, gateway: "Gateway", route: Route,
                 params: Mapping[str, str] | None = None) -> None:
        self.request = request
        self.gateway = gateway
        self.route = route
        config = gateway.config
        self.query = paging.parse(route, request.args, config.cursor_secret,
                                  request.uri.partition(b"?")[2], shards=config.shard_names)
        # From the list's own filters: a cursor page has them in its cursor.
        self.shards = _targets(gateway, route, query_args(self.query.filters), params or {})
        if (self.query.positions is not None and len(self.shards) < len(config.shards)
                and set(self.query.positions) != set(self.shards)):
            raise ListOwnersChanged(
                "the shards that own this list's keys changed since this cursor was issued "
                "(a tenant moved); start the list again without the cursor")
        accept = request.getHeader(b"accept")
        self.core = scatter_for(route, self.query, self.shards,
                                accept.decode("latin-1") if accept else None,
                                config.cursor_secret, queue_bound=config.server.merge_queue,
                                foreign=_foreign(gateway, route),
                                retry_after=empty_page_retry_after(config),
                                native=split.use_native(config.server.item_parser))
        self.reactor = gateway.client.reactor
        self.calls: list[BalancedCall] = []
        self._queue: deque[Action] = deque()
        self._running = False
        self._ticks: list[IDelayedCall] = []  # asked for by the core, not yet given

    def start(self) -> None:
        request = self.request
        headers = upstream_request_headers(request, scatter=True)
        call = self.gateway.balancer.call
        path = request.uri.partition(b"?")[0]
        for i, shard in enumerate(self.shards):
            query = paging.shard_query(self.route, self.query, shard)
            target = path + (b"?" + query if query else b"")
            shard_headers = headers if i == 0 else with_new_span(headers, request)
            self.calls.append(call(shard, b"GET", target, shard_headers, None,
                                   Tagged(self, i)))
        record_mod.recorded(request, self.core.outcome)
        request.registerProducer(self, True)  # may pause us at once: the calls exist
        request.notifyFinish().addErrback(self._client_gone)

    # -- ShardEvents: what the shard calls report -----------------------------------

    def shard_response(self, index: int, response: IResponse) -> bool:
        self._run(self.core.response(index, response.code, self.calls[index].attempts))
        return self.core.reading(index)

    def shard_data(self, index: int, data: bytes) -> bool:
        """The hot path: one call per piece of a shard's body."""
        actions = self.core.data(index, data)
        if actions:
            self._run(actions)
        return self.core.reading(index)

    def shard_end(self, index: int) -> None:
        self._run(self.core.end(index))

    def shard_failed(self, index: int, error: ShardError) -> None:
        self._run(self.core.failed(index, error))

    # -- IPushProducer: the client's transport drives these -------------------------

    def pauseProducing(self) -> None:
        self._run(self.core.client_paused())

    def resumeProducing(self) -> None:
        self._run(self.core.client_resumed())

    def stopProducing(self) -> None:
        self._client_gone(None)

    def _client_gone(self, reason: Any) -> None:
        for tick in self._ticks:
            if tick.active():
                tick.cancel()
        self._ticks.clear()
        self._run(self.core.client_gone())

    def _turn_over(self) -> None:
        self._ticks = [tick for tick in self._ticks if tick.active()]  # not this one
        self._run(self.core.tick())

    # -- carrying out the core's actions --------------------------------------------

    def _run(self, actions: Sequence[Action]) -> None:
        queue = self._queue
        queue.extend(actions)
        if self._running:
            return  # called back from inside an action: the loop below takes them in turn
        self._running = True
        do = _DO
        while queue:
            action = queue.popleft()
            try:
                do[type(action)](self, action)
            except Exception:  # ours or Twisted's: the actions after it still run
                log.failure("internal error while carrying out {action} (request {request_id})",
                            action=action, request_id=getattr(self.request, "request_id", b""))
        self._running = False

    def _pause(self, action: Pause) -> None:
        self.calls[action.shard].pause()

    def _resume(self, action: Resume) -> None:
        self.calls[action.shard].resume()

    def _cancel(self, action: Cancel) -> None:
        error = self.core.failures.get(action.shard)  # a body it could not use, or none
        self.calls[action.shard].cancel(error.code if error is not None else "cancelled")

    def _commit(self, action: Commit) -> None:
        self.request.setResponseCode(action.status)
        self.request.setHeader(b"content-type", action.content_type)

    def _write(self, action: Write) -> None:
        self.request.write(action.data)

    def _finish(self, action: Finish) -> None:
        self.request.unregisterProducer()
        self.request.finish()

    def _answer(self, action: Answer) -> None:
        self.request.unregisterProducer()
        if action.retry_after is not None:
            self.request.setHeader(b"retry-after", b"%d" % action.retry_after)
        send_json(self.request, action.status, action.body)

    def _abort(self, action: Abort) -> None:
        self.request.unregisterProducer()
        cut_response(self.request, self.reactor)

    def _later(self, action: Later) -> None:
        self._ticks.append(self.reactor.callLater(0, self._turn_over))


_DO: dict[type, Callable[[Any, Any], None]] = {
    Pause: ScatterResponse._pause, Resume: ScatterResponse._resume,
    Cancel: ScatterResponse._cancel, Commit: ScatterResponse._commit,
    Write: ScatterResponse._write, Finish: ScatterResponse._finish,
    Answer: ScatterResponse._answer, Abort: ScatterResponse._abort,
    Later: ScatterResponse._later,
}
