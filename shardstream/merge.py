"""Merge item streams from several shards into one output order.

Sans-IO: shards push batches of items, the merge hands back, in output
order, the batches that are known to come next. A batch is ``(shard, items)``
so that nothing is allocated per item on the interleaved path.
"""

from __future__ import annotations

from typing import Any

Batch = tuple[int, list[Any]]


class InterleavedMerge:
    """Arrival order: every item is next as soon as it arrives."""

    __slots__ = ("_ready",)

    def __init__(self, shards: int) -> None:
        self._ready: list[Batch] = []

    def push(self, shard: int, items: list[Any]) -> None:
        if items:
            self._ready.append((shard, items))

    def end(self, shard: int) -> None:
        """The shard will push nothing more (finished or failed)."""

    def queued(self, shard: int) -> int:
        return 0

    def pop(self) -> list[Batch]:
        ready, self._ready = self._ready, []
        return ready
