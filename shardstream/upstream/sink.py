"""The one contract of shard events, and the one way to tag them with a shard.

A shard call (:class:`~shardstream.upstream.client.ShardCall`, or a
:class:`~shardstream.upstream.balancer.BalancedCall` over replicas) reports
to its :class:`ShardSink` at most one ``response``, any number of ``data``,
then exactly one ``end`` or ``failed``; after ``cancel`` it reports nothing.
Whoever asks several shards at once (a scatter, a find) implements
:class:`ShardEvents` and gives each call a :class:`Tagged` sink.
"""

from __future__ import annotations

from typing import Protocol

from twisted.web.iweb import IResponse

from ..core.errors import ShardError


class ShardSink(Protocol):
    def response(self, response: IResponse) -> bool:
        """Headers are in; False: drop the body (the sink has recorded why)."""

    def data(self, data: bytes) -> bool:
        """A body chunk; False: stop reading and close the connection."""

    def end(self) -> None:
        """The body ended cleanly."""

    def failed(self, error: ShardError) -> None:
        """The request failed: before the headers, or in the middle of the body."""


class ShardEvents(Protocol):
    """The events of several shard calls, each with its shard's index."""

    def shard_response(self, index: int, response: IResponse) -> bool: ...

    def shard_data(self, index: int, data: bytes) -> bool: ...

    def shard_end(self, index: int) -> None: ...

    def shard_failed(self, index: int, error: ShardError) -> None: ...


class Tagged:
    """A :class:`ShardSink` that passes one call's events on with its index."""

    __slots__ = ("owner", "index")

    def __init__(self, owner: ShardEvents, index: int) -> None:
        self.owner, self.index = owner, index

    def response(self, response: IResponse) -> bool:
        return self.owner.shard_response(self.index, response)

    def data(self, data: bytes) -> bool:
        return self.owner.shard_data(self.index, data)

    def end(self) -> None:
        self.owner.shard_end(self.index)

    def failed(self, error: ShardError) -> None:
        self.owner.shard_failed(self.index, error)
