"""The state of one fanned-out list request, without any I/O.

The shell feeds each shard's body bytes, end of body and failures in; the
scatter parses, merges, skips the offset, stops at the limit, rewrites ids,
encodes, and hands out the bytes for the client. Every shard ends exactly
once: cleanly, with a :class:`ShardError`, or stopped early once the page is
full. When all have ended the document is closed with the meta.

Paging bookkeeping: ``consumed[i]`` counts shard i's items that this page
used up (skipped by the offset or delivered). A shard's position for the next
page is its start plus that. Once the limit is reached, a shard is still read
only as long as that is needed to know whether it has more items (and, when
the route wants totals, to see its total); the shell stops the others.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from . import ids
from .encode import JSONListEncoder, NDJSONEncoder
from .errors import ShardError
from .merge import InterleavedMerge, OrderedMerge, Unsorted
from .parse import ItemParser, ParseError

Merge = InterleavedMerge | OrderedMerge


class Scatter:
    def __init__(
        self,
        shards: Sequence[str],
        prefix: str,
        encoder: JSONListEncoder | NDJSONEncoder,
        merge: Merge | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
        quota: int | None = None,
        starts: Mapping[str, int] | None = None,
        total: str | None = None,
        id_fields: Sequence[str] = (),
        cursor: Callable[[dict[str, int]], str] | None = None,
    ) -> None:
        n = len(shards)
        self.shards = tuple(shards)
        self.encoder = encoder
        self.merge = merge if merge is not None else InterleavedMerge(n)
        self._parsers = [ItemParser(prefix, total) for _ in shards]
        self._want_total = bool(total)
        self._id_paths = ids.split_paths(id_fields)
        self._cursor = cursor
        self.limit = limit
        self._skip = offset
        self._left = limit  # items still to deliver
        self.quota = quota
        self.starts = [0 if starts is None else starts.get(s, 0) for s in shards]
        self.delivered = [0] * n
        self.consumed = [0] * n
        self.returned = [0] * n
        self.failures: dict[int, ShardError] = {}
        self._ended = [False] * n  # ended cleanly
        self._open = set(range(n))
        self._out: list[bytes] = []
        self.started = False  # the document's head has been handed out
        self.closed = False  # the meta has been handed out

    # -- events from the shell ------------------------------------------

    def feed(self, shard: int, data: bytes) -> bool:
        """A chunk of a shard's body. False: it failed; stop reading it."""
        if shard not in self._open:
            return False
        try:
            items = self._parsers[shard].feed(data)
        except ParseError as e:
            self._parse_failed(shard, e)
            return False
        if items:
            return self._push(shard, items)
        return True

    def end(self, shard: int) -> None:
        """The shard's body ended cleanly at the HTTP level."""
        if shard not in self._open:
            return
        try:
            items = self._parsers[shard].close()
        except ParseError as e:
            self._parse_failed(shard, e)
            return
        if self._push(shard, items):
            self._ended[shard] = True
            self._finish(shard)

    def fail(self, shard: int, error: ShardError) -> None:
        """The shard failed; items it already yielded stay delivered."""
        if shard not in self._open:
            return
        self.failures[shard] = error
        self._finish(shard)

    def release(self) -> list[int]:
        """Close the shards this page no longer needs; the shell stops reading them."""
        if not self.limit_reached:
            return []
        released = [i for i in sorted(self._open) if not self.wanted(i)]
        for i in released:
            self._finish(i)
        return released

    # -- state for the shell --------------------------------------------

    @property
    def done(self) -> bool:
        return not self._open

    @property
    def limit_reached(self) -> bool:
        return self._left is not None and self._left <= 0

    def is_open(self, shard: int) -> bool:
        return shard in self._open

    def wanted(self, shard: int) -> bool:
        """Does the page still need this shard's bytes?"""
        if shard not in self._open:
            return False
        if not self.limit_reached:
            return True
        if (self._want_total and self._parsers[shard].total is None
                and self.quota is not None and self.returned[shard] <= self.quota):
            return True  # bounded: the shard was asked for a limited number of items
        return self.merge.queued(shard) == 0  # not yet known whether it has more

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

    def positions(self) -> dict[str, int]:
        return {s: self.starts[i] + self.consumed[i] for i, s in enumerate(self.shards)}

    def has_more(self, shard: int) -> bool:
        """May this shard hold items after its position? (True when unsure.)"""
        if shard in self.failures or self.merge.queued(shard):
            return True
        if not self._ended[shard]:
            return True  # stopped early with nothing queued cannot happen; still open: unsure
        total = self._parsers[shard].total
        if total is not None:  # the shard's own count is the best evidence (it may cap pages)
            return self.starts[shard] + self.consumed[shard] < total
        if self.quota is None or self.returned[shard] < self.quota:
            return False
        return True  # it sent exactly what it was asked for: there may be more

    def meta(self) -> dict[str, Any]:
        failed = [
            {
                "shard": self.shards[i],
                "error": e.code,
                "message": e.message,
                "status": e.status,
                "attempts": e.attempts,
                "items_delivered": self.delivered[i],
            }
            for i, e in sorted(self.failures.items())
        ]
        meta: dict[str, Any] = {
            "shards": {
                "total": len(self.shards),
                "succeeded": len(self.shards) - len(self._open) - len(self.failures),
                "failed": failed,
            }
        }
        if self._want_total:
            totals = [p.total for p in self._parsers]
            known = [t for i, t in enumerate(totals) if t is not None and i not in self.failures]
            meta["total"] = sum(known) if known else None
            meta["total_excludes"] = [s for i, s in enumerate(self.shards)
                                      if totals[i] is None or i in self.failures]
        if self._cursor is not None:
            more = any(self.has_more(i) for i in range(len(self.shards)))
            meta["next_cursor"] = self._cursor(self.positions()) if more else None
        return meta

    # -- internals -------------------------------------------------------

    def _parse_failed(self, shard: int, error: ParseError) -> None:
        if error.items:  # complete items before the bad bytes are good items
            self._push(shard, error.items)
        self.fail(shard, ShardError(error.code, str(error)))

    def _push(self, shard: int, items: list[Any]) -> bool:
        self.returned[shard] += len(items)
        try:
            self.merge.push(shard, items)
        except Unsorted as e:
            self.fail(shard, ShardError("unsorted", f"{e}; later items of this shard were dropped"))
            return False
        self._drain()
        return True

    def _finish(self, shard: int) -> None:
        self._open.discard(shard)
        self.merge.end(shard)
        self._drain()

    def _drain(self) -> None:
        if self.limit_reached:
            return
        budget = None if self._left is None else self._skip + self._left
        batches = self.merge.pop(budget)
        if not batches:
            return
        out = self._out
        broken: list[int] = []
        for shard, items in batches:
            if shard in broken:
                continue
            if self._skip:
                n = min(self._skip, len(items))
                self._skip -= n
                self.consumed[shard] += n
                items = items[n:]
                if not items:
                    continue
            if not self.started:
                out.append(self.encoder.begin())
                self.started = True
            if self._id_paths:
                name = self.shards[shard]
                for item in items:
                    ids.globalize(item, self._id_paths, name)
            chunk, good = self._encode(items)
            if good:
                self.delivered[shard] += good
                self.consumed[shard] += good
                if self._left is not None:
                    self._left -= good
                out.append(chunk)
            if good < len(items):
                broken.append(shard)
        for shard in broken:  # its later items would leave a hole: drop them all
            self.merge.discard(shard)
            self.fail(shard, ShardError(
                "unencodable_item", "an item of this shard could not be encoded "
                "(nested too deeply?); the shard's later items were dropped"))

    def _encode(self, items: list[Any]) -> tuple[bytes, int]:
        """Encoded items and how many; on an item that cannot be encoded, the
        ones before it."""
        try:
            return self.encoder.items(items), len(items)
        except Exception:
            pass
        for n, item in enumerate(items):
            try:
                self.encoder.check(item)
            except Exception:
                return (self.encoder.items(items[:n]) if n else b""), n
        return b"", 0  # each alone is fine, together not: fail the shard, never raise
