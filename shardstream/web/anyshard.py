"""Any mode: data every shard holds (categories, currencies) from any one of them.

The shards are tried one at a time, those with an available replica first,
starting from a different shard on each request so that the load spreads.
A shard that fails before its response, or answers a status the retry rules
would retry (502, 503, 504), is replaced by the next one, as a failed
replica is, under the same rules for what may be sent again; the first other
answer is relayed as it is. The answer is 502 (504 if they all timed out)
naming every shard that failed, once there is none left to try.
"""

from __future__ import annotations

import io
import itertools
from typing import TYPE_CHECKING

from twisted.web.client import FileBodyProducer
from twisted.web.iweb import IResponse
from twisted.web.server import Request

from ..core.errors import ShardError, failure_answer
from ..core.outcome import Outcome
from ..core.retry import BODY_METHODS, retryable_failure, retryable_status
from ..core.routing import Match
from ..upstream.balancer import BalancedCall
from ..upstream.sink import Tagged
from . import record as record_mod
from .errors import respond_error
from .headers import upstream_request_headers
from .find import ShardsAsked
from .relay import Relay

if TYPE_CHECKING:
    from .gateway import Gateway

_turn = itertools.count()


class AnyResponse(ShardsAsked):
    """Implements ShardEvents: event ``i`` is about ``self.order[i]``."""

    def __init__(self, request: Request, gateway: "Gateway", match: Match) -> None:
        self.request, self.gateway, self.route = request, gateway, match.route
        names = list(gateway.config.shard_names)
        start = next(_turn) % len(names)
        rotated = names[start:] + names[:start]
        down = set(gateway.balancer.unavailable())
        self.order = [n for n in rotated if n not in down] + [n for n in rotated if n in down]
        self.calls: list[BalancedCall] = []
        self.errors: dict[str, ShardError] = {}
        self.relay: Relay | None = None
        self.gone = False
        content = request.content
        self.body = b""
        if content is not None:
            content.seek(0)
            self.body = content.read()

    def start(self) -> None:
        self.request.notifyFinish().addErrback(self._client_gone)
        record_mod.recorded(self.request, self.outcome)
        self._next()

    def outcome(self) -> Outcome:
        if self.relay is not None:
            return Outcome(asked=len(self.calls), failed={
                **{s: e.code for s, e in self.errors.items()}, **self.relay.outcome().failed})
        return Outcome(asked=len(self.calls), failed={s: e.code for s, e in self.errors.items()})

    def _next(self) -> None:
        shard = self.order[len(self.calls)]
        request = self.request
        body = None
        if self.body or request.method in BODY_METHODS:
            body = FileBodyProducer(io.BytesIO(self.body))
        self.calls.append(self.gateway.balancer.call(
            shard, request.method, request.uri, upstream_request_headers(request, scatter=False),
            body, Tagged(self, len(self.calls))))

    def _current(self, index: int) -> bool:
        return not self.gone and index == len(self.calls) - 1

    def _may_try_another(self) -> bool:
        return len(self.calls) < len(self.order)

    # -- ShardEvents ---------------------------------------------------------------

    def shard_response(self, index: int, response: IResponse) -> bool:
        if not self._current(index):
            return False
        shard = self.order[index]
        has_body = bool(self.body)
        if self._may_try_another() and retryable_status(self.request.method, has_body,
                                                        response.code):
            self.errors[shard] = ShardError("status", f"the shard answered {response.code}",
                                            status=response.code)
            self.calls[index].cancel()
            self._next()
            return False
        self.relay = relay = Relay(self.request, self.gateway, self.route, shard)
        relay.call = self.calls[index]
        relay.attach()
        return relay.response(response)

    def shard_data(self, index: int, data: bytes) -> bool:
        return self.relay.data(data) if self.relay is not None and self._current(index) else False

    def shard_end(self, index: int) -> None:
        if self.relay is not None and self._current(index):
            self.relay.end()

    def shard_failed(self, index: int, error: ShardError) -> None:
        if not self._current(index):
            return
        if self.relay is not None:
            self.relay.failed(error)
            return
        self.errors[self.order[index]] = error
        if self._may_try_another() and retryable_failure(self.request.method, bool(self.body),
                                                         error.code):
            self._next()
            return
        self.gone = True
        status, code = failure_answer(list(self.errors.values()), "shards_timeout",
                                      "shards_failed")
        respond_error(self.request, status, code, "no shard could answer",
                      failed=self.failed_list())
