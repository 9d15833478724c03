"""Merge item streams from several shards into one output order.

Sans-IO: shards push batches of items, the merge hands back, in output
order, the batches that are known to come next. A batch is ``(shard, items)``
so that nothing is allocated per item on the interleaved path.

:class:`OrderedMerge` is vtgate's merge-sort (go/vt/vtgate/engine/merge_sort.go)
for streams that arrive in pieces: a queue per shard, a heap over the queues'
heads, and an item leaves only when it is known to be next overall, that is
when every shard still running has an item waiting (or has ended).
"""

from __future__ import annotations

from collections import deque
from decimal import Decimal
from heapq import heapify, heappop, heappush
from typing import Any, Callable

from .encode import encode_value
from .paths import DottedPath
from .split import field_reader

Batch = tuple[int, list[Any]]

_MISSING = (1,)  # sorts after every present value, in both directions


class Unsorted(ValueError):
    """A shard's stream is not in the order it was asked for."""


class _Desc:
    """Reverses the order of what it wraps (strings cannot be negated)."""

    __slots__ = ("k",)

    def __init__(self, k: Any) -> None:
        self.k = k

    def __lt__(self, other: "_Desc") -> bool:
        return bool(other.k < self.k)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and self.k == other.k

    def __hash__(self) -> int:
        return hash(self.k)


_RANK = {bool: 1, int: 2, float: 2, Decimal: 2, str: 3}  # by exact type: one lookup


def value_key(value: Any) -> tuple[Any, ...]:
    """JSON values in a total order: booleans, numbers (numerically), strings
    (by code point, so ISO timestamps sort by time), then arrays and objects
    (by their compact JSON text). null and missing are handled by the caller."""
    rank = _RANK.get(type(value))
    if rank is not None:
        return (rank, value)
    if isinstance(value, bool):
        return (1, value)
    if isinstance(value, (int, float, Decimal)):
        return (2, value)
    if isinstance(value, str):
        return (3, value)
    try:
        return (4, encode_value(value))
    except Exception:  # too deep to encode: after every other array and object
        return (5,)


def sort_key(path: DottedPath | str, descending: bool = False,
             raw: bool = False) -> Callable[[Any], Any]:
    """The merge key of an item for a dotted path; null/missing sort last.
    ``raw``: items are JSON bytes, of which only the key is decoded.

    An ascending key is one flat tuple, ``(0, rank, value)``: the merge's heap
    compares keys several times per item, and a nested tuple costs a level
    more in each comparison (the sorted merge's largest share of CPU)."""
    dotted = path if isinstance(path, DottedPath) else DottedPath.parse(path)
    parts = dotted.parts
    single = parts[0] if len(parts) == 1 else None

    def rank(value: Any) -> Any:
        if value is None:
            return _MISSING
        k = value_key(value)
        return (0, _Desc(k)) if descending else (0, *k)

    if raw:
        read = field_reader(dotted)
        ranks = _RANK

        def raw_key(item: bytes) -> Any:
            value = read(item)
            r = ranks.get(type(value))
            if r is not None and not descending:
                return (0, r, value)
            return rank(value)

        return raw_key

    def key(item: Any) -> Any:
        if single is not None:
            value = item.get(single) if isinstance(item, dict) else None
        else:
            value = item
            for part in parts:
                value = value.get(part) if isinstance(value, dict) else None
        return rank(value)

    return key


def _take(batches: list[Batch], budget: int | None) -> list[Batch]:
    if budget is None:
        return batches
    out: list[Batch] = []
    for shard, items in batches:
        if budget <= 0:
            break
        if len(items) > budget:
            items = items[:budget]
        out.append((shard, items))
        budget -= len(items)
    return out


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
        return sum(len(items) for s, items in self._ready if s == shard)

    def discard(self, shard: int) -> None:
        """Forget what a shard has queued (it failed)."""
        self._ready = [(s, items) for s, items in self._ready if s != shard]

    def pop(self, budget: int | None = None) -> list[Batch]:
        """The items now known to come next, at most ``budget`` of them."""
        ready, self._ready = self._ready, []
        if budget is None:
            return ready
        out = _take(ready, budget)
        taken = sum(len(items) for _, items in out)
        rest = []
        for shard, items in ready:  # put back what the budget did not take
            n = min(taken, len(items))
            taken -= n
            if n < len(items):
                rest.append((shard, items[n:]))
        self._ready = rest
        return out


class OrderedMerge:
    """k-way merge of sorted streams; ties go to the lower shard index, then
    to the shard's own order."""

    def __init__(self, shards: int, key: Callable[[Any], Any]) -> None:
        self._key = key
        self._queues: list[deque[tuple[Any, Any]]] = [deque() for _ in range(shards)]
        self._open = [True] * shards
        self._last: list[Any] = [None] * shards
        self._heap: list[tuple[Any, int]] = []
        self._starved = shards  # open shards with nothing queued: the merge waits for them

    def push(self, shard: int, items: list[Any]) -> None:
        """Queue a shard's items; raise Unsorted at the first one out of order,
        or what the key raised (the ones before it stay queued either way)."""
        if not items:
            return
        q = self._queues[shard]
        was_empty = not q
        key, last = self._key, self._last[shard]
        try:
            for item in items:
                k = key(item)  # may raise too (split.UnreadableField): the same holds
                if last is not None and k < last:
                    raise Unsorted("the shard's items are not sorted as asked")
                q.append((k, item))
                last = k
        finally:  # what was queued before a bad item is in the heap, whatever raised
            self._last[shard] = last
            if was_empty and q:
                heappush(self._heap, (q[0][0], shard))
                if self._open[shard]:
                    self._starved -= 1

    def end(self, shard: int) -> None:
        if self._open[shard]:
            self._open[shard] = False
            if not self._queues[shard]:
                self._starved -= 1

    def queued(self, shard: int) -> int:
        return len(self._queues[shard])

    def discard(self, shard: int) -> None:
        """Forget what a shard has queued (it failed); call end() too."""
        if self._queues[shard]:
            self._queues[shard].clear()
            self._heap = [(k, s) for k, s in self._heap if s != shard]
            heapify(self._heap)
            if self._open[shard]:
                self._starved += 1

    def pop(self, budget: int | None = None) -> list[Batch]:
        out: list[Batch] = []
        heap, queues = self._heap, self._queues
        while heap and self._starved == 0 and (budget is None or budget > 0):
            _, shard = heappop(heap)
            q = queues[shard]
            _, item = q.popleft()
            if out and out[-1][0] == shard:
                out[-1][1].append(item)
            else:
                out.append((shard, [item]))
            if q:
                heappush(heap, (q[0][0], shard))
            elif self._open[shard]:
                self._starved += 1
            if budget is not None:
                budget -= 1
        return out
