"""Find mode: a lookup whose owner is unknown asks every shard at once.

The first shard to answer 2xx wins: its response is relayed (through a
:class:`~shardstream.proxy.Relay`) and every other shard request is
cancelled. The answer is 404 only when every shard said 404, and 502 (504 if
they all timed out) when some failed and none had it. The winner is
remembered in a bounded TTL cache, so the next request for the same path goes
straight to its shard; if that shard then says 404, the entry is dropped and
every shard is asked again.
"""

from __future__ import annotations

from typing import Any

from .errors import ShardError, failure_answer, respond_error
from .headers import upstream_request_headers
from .proxy import Relay
from .routing import Match


class _Candidate:
    """One shard asked by a find; forwards to the find until it wins."""

    __slots__ = ("find", "index", "shard", "call")

    def __init__(self, find: "FindResponse", index: int, shard: str) -> None:
        self.find, self.index, self.shard = find, index, shard
        self.call: Any = None

    def response(self, response: Any) -> bool:
        return self.find._response(self, response)

    def data(self, data: bytes) -> bool:
        return self.find.relay.data(data) if self.find.winner is self else False

    def end(self) -> None:
        if self.find.winner is self:
            self.find.relay.end()
        else:
            self.find._lost(self, None)

    def failed(self, error: ShardError) -> None:
        if self.find.winner is self:
            self.find.relay.failed(error)
        else:
            self.find._lost(self, error)


class FindResponse:
    def __init__(self, request: Any, gateway: Any, match: Match) -> None:
        self.request = request
        self.gateway = gateway
        self.route = match.route
        self.key = request.path
        self.cache = gateway.find_cache(match.route)
        self.candidates: list[_Candidate] = []
        self.winner: _Candidate | None = None
        self.relay: Relay | None = None
        self.not_found: list[str] = []
        self.errors: dict[str, ShardError] = {}
        self.gone = False
        self.cached = False

    def start(self) -> None:
        self.request.notifyFinish().addErrback(self._client_gone)
        shard = self.cache.get(self.key)
        if shard is not None and shard in {s.name for s in self.gateway.config.shards}:
            self.cached = True
            self._ask([shard])
        else:
            self._ask([s.name for s in self.gateway.config.shards])

    def _ask(self, shards: list[str]) -> None:
        headers = upstream_request_headers(self.request, scatter=False)
        self.candidates = [_Candidate(self, i, name) for i, name in enumerate(shards)]
        self.not_found, self.errors = [], {}
        for c in self.candidates:
            if self.gone or self.winner is not None:
                break
            c.call = self.gateway.balancer.call(c.shard, self.request.method, self.request.uri,
                                                headers, None, c)

    def _response(self, c: _Candidate, response: Any) -> bool:
        if self.gone or self.winner is not None:
            return False
        if 200 <= response.code < 300:
            self.winner = c
            self.cache[self.key] = c.shard
            for other in self.candidates:
                if other is not c and other.call is not None:
                    other.call.cancel()
            self.relay = Relay(self.request, self.gateway, self.route, c.shard)
            self.relay.call = c.call
            self.relay.attach()
            return self.relay.response(response)
        if response.code == 404:
            self.not_found.append(c.shard)
        else:
            self.errors[c.shard] = ShardError("status", f"the shard answered {response.code}",
                                              status=response.code, attempts=c.call.attempts)
        self._settle()
        return False

    def _lost(self, c: _Candidate, error: ShardError | None) -> None:
        if error is not None and c.shard not in self.not_found:
            self.errors[c.shard] = error
        self._settle()

    def _settle(self) -> None:
        """Every shard has answered and none had it: say so."""
        if self.gone or self.winner is not None:
            return
        if len(self.not_found) + len(self.errors) < len(self.candidates):
            return
        if self.cached:  # the remembered owner no longer has it: ask everyone
            self.cache.pop(self.key, None)
            self.cached = False
            self._ask([s.name for s in self.gateway.config.shards])
            return
        self.gone = True
        if not self.errors:
            respond_error(self.request, 404, "not_found",
                          f"no shard has {self.request.path.decode('latin-1')}")
            return
        status, code = failure_answer(list(self.errors.values()), "shards_timeout", "shards_failed")
        respond_error(
            self.request,
            status,
            code,
            "no shard answered with the resource, and some failed",
            not_found=self.not_found,
            failed=[{"shard": s, "error": e.code, "message": e.message, "status": e.status}
                    for s, e in sorted(self.errors.items())],
        )

    def _client_gone(self, reason: Any) -> None:
        if self.gone:
            return
        self.gone = True
        if self.relay is not None:
            self.relay.client_gone(reason)
        for c in self.candidates:
            if c.call is not None:
                c.call.cancel()
