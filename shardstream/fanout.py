"""The Twisted side of a scatter request: one shard call per shard, bytes
into the :class:`~shardstream.scatter.Scatter`, its output to the client.

The response status is decided at the first byte for the client: 200 as
soon as an item (or the end of the list) is ready, or 502/504 when every
shard failed before yielding anything. The client's transport is our
consumer: when it is full, every shard's transport is paused.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from . import paging
from .config import Route
from .encode import encoder_for
from .errors import ShardError, failure_answer, respond_error
from .headers import upstream_request_headers
from .merge import InterleavedMerge, OrderedMerge, sort_key
from .scatter import Scatter


class _ShardSink:
    """Tags one shard call's events with the shard's index."""

    __slots__ = ("owner", "index")

    def __init__(self, owner: "ScatterResponse", index: int) -> None:
        self.owner, self.index = owner, index

    def response(self, response: Any) -> bool:
        return self.owner._response(self.index, response)

    def data(self, data: bytes) -> bool:
        return self.owner._data(self.index, data)

    def end(self) -> None:
        self.owner._end(self.index)

    def failed(self, error: ShardError) -> None:
        self.owner._failed(self.index, error)


@implementer(IPushProducer)
class ScatterResponse:
    """One list request. Raises paging.BadListQuery (400) before any shard is asked."""

    def __init__(self, request: Any, gateway: Any, route: Route) -> None:
        self.request = request
        self.gateway = gateway
        self.route = route
        config = gateway.config
        names = [s.name for s in config.shards]
        secret = config.cursor_secret
        self.query = query = paging.parse(route, request.args, secret,
                                          request.uri.partition(b"?")[2])
        merge: InterleavedMerge | OrderedMerge
        if query.sort is not None:
            merge = OrderedMerge(len(names), sort_key(query.sort_path, query.descending))
        else:
            merge = InterleavedMerge(len(names))
        accept = request.getHeader(b"accept")
        self.scatter = Scatter(
            names,
            route.items,
            encoder_for(accept.decode("latin-1") if accept else None),
            merge,
            limit=query.limit,
            offset=0 if query.positions is not None else query.offset,
            quota=query.quota(),
            starts=query.positions,
            total=route.total,
            id_fields=route.id_fields,
            cursor=lambda positions: paging.encode_cursor(route, query, positions, secret),
        )
        self.ordered = query.sort is not None
        self.queue_bound = config.server.merge_queue  # per shard, sorted merge only
        self.strict = not (route.partial if query.partial is None else query.partial)
        self.reactor = gateway.client.reactor
        self._pending: Any = None  # the flush scheduled for the end of this reactor turn
        self._strict_call: Any = None  # partial=false: the error answer, at the end of the turn
        self.calls: list[Any] = []
        self.gone = False
        self.client_paused = False
        self.committed = False
        self.finished = False

    def start(self) -> None:
        request = self.request
        request.registerProducer(self, True)
        request.notifyFinish().addErrback(self._client_gone)
        headers = upstream_request_headers(request, scatter=True)
        call = self.gateway.balancer.call
        path = request.uri.partition(b"?")[0]
        for i, shard in enumerate(self.gateway.config.shards):
            if self.gone:
                break
            query = paging.shard_query(self.route, self.query, shard.name)
            target = path + (b"?" + query if query else b"")
            self.calls.append(call(shard.name, b"GET", target, headers, None,
                                   _ShardSink(self, i)))
        self._sync()

    # -- shard events --------------------------------------------------------

    def _response(self, shard: int, response: Any) -> bool:
        if 200 <= response.code < 300:
            return True
        self.scatter.fail(
            shard,
            ShardError("status", f"the shard answered {response.code}", status=response.code,
                       attempts=self.calls[shard].attempts),
        )
        self._sync()
        return False

    def _data(self, shard: int, data: bytes) -> bool:
        """The hot path: one call per chunk of a shard's body."""
        scatter = self.scatter
        ok = scatter.feed(shard, data)
        if not ok or scatter.limit_reached:
            self._sync()
        else:
            if self.ordered and scatter.merge.queued(shard) >= self.queue_bound:
                self.calls[shard].pause()
            if not self.committed and scatter.ready():
                self._flush()  # the first item goes out now: time to first item is what counts
            else:
                self._schedule_flush()
        return ok and not self.gone

    def _schedule_flush(self) -> None:
        """Write once per reactor turn, whatever the number of chunks read in it."""
        if self._pending is None and not (self.gone or self.finished):
            self._pending = self.reactor.callLater(0, self._flush_turn)

    def _flush_turn(self) -> None:
        self._pending = None
        self._flush()
        if self.ordered and not self.client_paused:  # the merge drained: queues may have room
            queued = self.scatter.merge.queued
            for i, call in enumerate(self.calls):
                if call.paused and not call.done and queued(i) < self.queue_bound:
                    call.resume()

    def _end(self, shard: int) -> None:
        self.scatter.end(shard)
        self._sync()

    def _failed(self, shard: int, error: ShardError) -> None:
        self.scatter.fail(shard, error)
        self._sync()

    def _sync(self) -> None:
        """Stop the shards the page no longer needs, pause the ones whose merge
        queue is full (or all, while the client is slow), then write."""
        scatter = self.scatter
        for i in scatter.release():
            if i < len(self.calls):
                self.calls[i].cancel()
        queued = scatter.merge.queued
        for i, call in enumerate(self.calls):
            if call.done:
                continue
            if not scatter.is_open(i):
                call.cancel()  # failed in the scatter (e.g. malformed JSON)
            elif self.client_paused or (
                self.ordered and not scatter.limit_reached and queued(i) >= self.queue_bound
            ):
                call.pause()  # past the limit a shard is read only briefly: never hold it
            else:
                call.resume()
        self._flush()

    # -- output ------------------------------------------------------------------

    def _flush(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        if self.gone or self.finished:
            return
        scatter, request = self.scatter, self.request
        if self.strict and scatter.failures:
            if self.committed:
                self._strict_failure()
            elif self._strict_call is None:
                # Answer at the end of this reactor turn, so that shards failing
                # together (one deadline) are all named.
                self._strict_call = self.reactor.callLater(0, self._strict_failure)
            return
        if not self.committed:
            if not scatter.ready():
                return
            if scatter.all_failed:
                self._all_failed()
                return
            self.committed = True
            request.setResponseCode(200)
            request.setHeader(b"content-type", scatter.encoder.content_type)
        data = scatter.take()
        if data:
            request.write(data)
        if scatter.closed:
            self.finished = True
            request.unregisterProducer()
            request.finish()

    def _strict_failure(self) -> None:
        """partial=false: a shard failed, so this response must not look complete.
        Before the first byte that is a 502/504 naming the failures; after it,
        the connection is aborted (no terminating chunk, no closing bracket)."""
        self._strict_call = None
        if self.gone or self.finished:
            return
        for call in self.calls:
            call.cancel()
        if self.committed:
            self.gone = True
            self.request.unregisterProducer()
            self.request.channel.transport.abortConnection()
            return
        self.finished = True
        self.request.unregisterProducer()
        failures = self.scatter.failures
        status, code = failure_answer(list(failures.values()), "shard_timeout", "shard_failed",
                                      every_shard=len(failures) == len(self.scatter.shards))
        names = ", ".join(self.scatter.shards[i] for i in sorted(failures))
        respond_error(self.request, status, code,
                      f"shard {names} failed and this request asks for a complete result "
                      "(partial=false); see meta.shards.failed", meta=self.scatter.meta())

    def _all_failed(self) -> None:
        self.finished = True
        self.request.unregisterProducer()
        status, code = failure_answer(list(self.scatter.failures.values()),
                                      "shards_timeout", "shards_failed")
        respond_error(self.request, status, code, "every shard failed; see meta.shards.failed",
                      meta=self.scatter.meta())

    # -- IPushProducer: the client's transport drives these -----------------------

    def pauseProducing(self) -> None:
        self.client_paused = True
        for call in self.calls:
            call.pause()

    def resumeProducing(self) -> None:
        self.client_paused = False
        self._sync()

    def stopProducing(self) -> None:
        self._client_gone(None)

    def _client_gone(self, reason: Any) -> None:
        if self.gone or self.finished:
            return
        self.gone = True
        for pending in (self._pending, self._strict_call):
            if pending is not None and pending.active():
                pending.cancel()
        self._pending = self._strict_call = None
        for call in self.calls:
            call.cancel()
