"""The state of one fanned-out list request, without any I/O.

The shell feeds each shard's body bytes, end of body and failures in; the
scatter parses, merges and encodes, and hands out the bytes for the client.
Every shard ends exactly once, either cleanly or with a :class:`ShardError`;
when all have ended the document is closed with the meta.
"""

from __future__ import annotations

from typing import Any, Sequence

from .encode import JSONListEncoder, NDJSONEncoder
from .errors import ShardError
from .merge import InterleavedMerge
from .parse import ItemParser, ParseError


class Scatter:
    def __init__(
        self,
        shards: Sequence[str],
        prefix: str,
        encoder: JSONListEncoder | NDJSONEncoder,
        merge: InterleavedMerge | None = None,
    ) -> None:
        self.shards = tuple(shards)
        self.encoder = encoder
        self.merge = merge if merge is not None else InterleavedMerge(len(shards))
        self._parsers = [ItemParser(prefix) for _ in shards]
        self.delivered = [0] * len(shards)
        self.failures: dict[int, ShardError] = {}
        self._open = set(range(len(shards)))
        self._out: list[bytes] = []
        self.started = False  # the document's head has been handed out
        self.closed = False  # the meta has been handed out

    # -- events from the shell ------------------------------------------

    def feed(self, shard: int, data: bytes) -> bool:
        """A chunk of a shard's body. False: the shard failed, stop reading it."""
        if shard not in self._open:
            return False
        try:
            items = self._parsers[shard].feed(data)
        except ParseError as e:
            self.fail(shard, ShardError(e.code, str(e)))
            return False
        if items:
            self.merge.push(shard, items)
            self._drain()
        return True

    def end(self, shard: int) -> None:
        """The shard's body ended cleanly at the HTTP level."""
        if shard not in self._open:
            return
        try:
            items = self._parsers[shard].close()
        except ParseError as e:
            self.fail(shard, ShardError(e.code, str(e)))
            return
        self.merge.push(shard, items)
        self._finish(shard)

    def fail(self, shard: int, error: ShardError) -> None:
        """The shard failed; items it already yielded stay delivered."""
        if shard not in self._open:
            return
        self.failures[shard] = error
        self._finish(shard)

    # -- state for the shell --------------------------------------------

    @property
    def done(self) -> bool:
        return not self._open

    def is_open(self, shard: int) -> bool:
        return shard in self._open

    @property
    def all_failed(self) -> bool:
        return self.done and len(self.failures) == len(self.shards)

    def ready(self) -> bool:
        """Is there something for the client (an item, or the end)?"""
        return bool(self._out) or (self.done and not self.closed)

    def take(self) -> bytes:
        """All bytes ready for the client now; the head first, the meta last."""
        out = self._out
        if self.done and not self.closed:
            if not self.started:
                out.insert(0, self.encoder.begin())
                self.started = True
            out.append(self.encoder.end(self.meta()))
            self.closed = True
        if not out:
            return b""
        self._out = []
        return b"".join(out)

    def meta(self) -> dict[str, Any]:
        failed = [
            {
                "shard": self.shards[i],
                "error": e.code,
                "message": e.message,
                "status": e.status,
                "items_delivered": self.delivered[i],
            }
            for i, e in sorted(self.failures.items())
        ]
        return {
            "shards": {
                "total": len(self.shards),
                "succeeded": len(self.shards) - len(self._open) - len(self.failures),
                "failed": failed,
            }
        }

    # -- internals -------------------------------------------------------

    def _finish(self, shard: int) -> None:
        self._open.discard(shard)
        self.merge.end(shard)
        self._drain()

    def _drain(self) -> None:
        batches = self.merge.pop()
        if not batches:
            return
        out = self._out
        if not self.started:
            out.append(self.encoder.begin())
            self.started = True
        encode = self.encoder.items
        delivered = self.delivered
        for shard, items in batches:
            delivered[shard] += len(items)
            out.append(encode(items))
