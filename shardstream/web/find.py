"""Find mode: a lookup whose owner is unknown asks every shard at once.

The first shard to answer 2xx wins: its response is relayed (through a
:class:`~shardstream.web.relay.Relay`) and every other shard request is
cancelled. The answer is 404 only when every shard said 404, and 502 (504 if
they all timed out) when some failed and none had it. The winner is
remembered in a bounded TTL cache, so the next request for the same path goes
straight to its shard; if that shard then says 404, the entry is dropped and
every shard is asked again.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, MutableMapping

from twisted.web.iweb import IResponse
from twisted.web.server import Request

from ..core.errors import ShardError, failure_answer
from ..core.outcome import Outcome
from ..core.routing import Match
from ..upstream.balancer import BalancedCall
from ..upstream.sink import Tagged
from .errors import respond_error
from .headers import upstream_request_headers, with_new_span
from . import record as record_mod
from .relay import Relay

if TYPE_CHECKING:
    from .gateway import Gateway


class ShardsAsked:
    """What a find and an any request share: their calls, the relay of the
    shard that answers, the failures to report, the client leaving."""

    calls: list[BalancedCall]
    relay: Relay | None
    errors: dict[str, ShardError]
    gone: bool

    def failed_list(self) -> list[dict[str, Any]]:
        return [{"shard": s, "error": e.code, "message": e.message, "status": e.status}
                for s, e in sorted(self.errors.items())]

    def _client_gone(self, reason: Any) -> None:
        if self.gone:
            return
        self.gone = True
        if self.relay is not None:
            self.relay.client_gone(reason)
        for call in self.calls:
            call.cancel()


class FindResponse(ShardsAsked):
    """Implements ShardEvents: event ``i`` is about ``self.asked[i]``. A second
    round (the cached owner no longer had it) appends to the lists, so an
    index always names one call."""

    def __init__(self, request: Request, gateway: "Gateway", match: Match,
                 found: Callable[[str], None] | None = None) -> None:
        """``found``: told the winner (a directory remembers it by its key);
        without it, the find route's own cache remembers it by path."""
        self.request = request
        self.gateway = gateway
        self.route = match.route
        self.key = request.path
        self.found = found
        self.cache: MutableMapping[bytes, str] = (gateway.find_cache(match.route)
                                                  if found is None else {})
        self.asked: list[str] = []
        self.calls: list[BalancedCall] = []
        self._round = 0  # the index of the current round's first shard
        self.winner: int | None = None
        self.relay: Relay | None = None
        self.not_found: list[str] = []
        self.errors: dict[str, ShardError] = {}
        self.gone = False
        self.cached = False

    def start(self) -> None:
        self.request.notifyFinish().addErrback(self._client_gone)
        record_mod.recorded(self.request, self.outcome)
        shard = self.cache.get(self.key)
        if shard is not None and shard in {s.name for s in self.gateway.config.shards}:
            self.cached = True
            self._ask([shard])
        else:
            self._ask([s.name for s in self.gateway.config.shards])

    def outcome(self) -> Outcome:
        """The winner's relay, or the failures the client was told of."""
        if self.relay is not None:
            return dataclasses.replace(self.relay.outcome(), asked=len(self.asked))
        failed = {s: e.code for s, e in self.errors.items()} if self.gone else {}
        return Outcome(asked=len(self.asked), failed=failed)

    def _ask(self, shards: list[str]) -> None:
        headers = upstream_request_headers(self.request, scatter=False)
        self._round = len(self.asked)
        self.not_found, self.errors = [], {}
        for i, name in enumerate(shards):
            if self.gone or self.winner is not None:
                break
            self.asked.append(name)
            self.calls.append(self.gateway.balancer.call(
                name, self.request.method, self.request.uri,
                headers if i == 0 else with_new_span(headers, self.request), None,
                Tagged(self, len(self.calls))))

    # -- ShardEvents ---------------------------------------------------------------

    def shard_response(self, index: int, response: IResponse) -> bool:
        if self.gone or self.winner is not None or index < self._round:
            return False
        shard = self.asked[index]
        if 200 <= response.code < 300:
            self.winner = index
            self.cache[self.key] = shard
            if self.found is not None:
                self.found(shard)
            for i, call in enumerate(self.calls[self._round:], start=self._round):
                if i != index:
                    call.cancel()
            self.relay = relay = Relay(self.request, self.gateway, self.route, shard)
            relay.call = self.calls[index]
            relay.attach()
            return relay.response(response)
        if response.code == 404:
            self.not_found.append(shard)
        else:
            self.errors[shard] = ShardError("status", f"the shard answered {response.code}",
                                            status=response.code,
                                            attempts=self.calls[index].attempts)
        self._settle()
        return False

    def shard_data(self, index: int, data: bytes) -> bool:
        return self.relay.data(data) if self.relay is not None and self.winner == index else False

    def shard_end(self, index: int) -> None:
        if self.relay is not None and self.winner == index:
            self.relay.end()
        else:
            self._lost(index, None)

    def shard_failed(self, index: int, error: ShardError) -> None:
        if self.relay is not None and self.winner == index:
            self.relay.failed(error)
        else:
            self._lost(index, error)

    # -- the answer when no shard has it ------------------------------------------------

    def _lost(self, index: int, error: ShardError | None) -> None:
        if index < self._round:
            return  # an earlier round's: settled already
        shard = self.asked[index]
        if error is not None and shard not in self.not_found:
            self.errors[shard] = error
        self._settle()

    def _settle(self) -> None:
        """Every shard has answered and none had it: say so."""
        if self.gone or self.winner is not None:
            return
        if len(self.not_found) + len(self.errors) < len(self.asked) - self._round:
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
            failed=self.failed_list(),
        )
