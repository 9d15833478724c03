"""One fanned-out list request as a state machine, without any I/O.

h11's ``Connection`` is the model: events in, actions out. The shell reports
each shard's events (its response status, body bytes, end, failure), the
client's (its transport paused or resumed, the client gone) and the end of a
reactor turn it was asked to wait for; every event returns the actions the
shell carries out, in the order given: pause, resume or cancel a shard's
call, commit the response, write bytes, finish, answer with an error
instead, abort the connection, or call :meth:`Scatter.tick` at the end of
the reactor turn. Every decision about the request is taken here:

- **when bytes go out**: the first item (or a complete empty list) at once,
  since time to first item is what counts; later bytes once per turn;
- **pausing**: a shard whose merge queue is full (a sorted merge is waiting
  for another shard's head) and every shard while the client reads slowly;
- **cancelling**: a shard that failed in the gateway (bad JSON, unsorted,
  an item that cannot be encoded), the shards the page no longer needs once
  its limit is reached, and every shard when the request ends early;
- **the status**: 200 once there is something to send; 502/504 (or the
  shards' common 4xx) when every shard failed first; 503 with Retry-After
  when a page would be empty only because the shards that still have items
  failed (a client following cursors would otherwise spin through empty
  pages). In strict mode (``partial=false``) nothing is committed before
  every shard answered 2xx, so the usual failures (refused, 5xx, no headers
  in time) become an error answer naming every shard that failed in the
  same turn; a failure after the commit cuts the connection, so a cut
  document never looks complete.

The document itself: each shard's bytes are parsed, merged, the offset
skipped, the limit applied, ids rewritten and the items encoded, with the
meta last. With ``native`` the items are the exact bytes the native
splitter cut out (:mod:`split`): they pass through as they are, a sorted
merge decodes only its key, owner filtering only the owner field, and id
rewriting only the items that may hold an id. ``consumed`` counts a shard's items that this page used up
(skipped by the offset or delivered); its position for the next page is its
start plus that. Once the limit is reached a shard is still read only as
long as needed to know whether it has more items (and, when the route wants
totals, to see its total); the others are cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from . import ids, paging
from .config import Route
from .encode import JSONListEncoder, NDJSONEncoder, encoder_for
from .errors import ShardError, error_body, failure_answer
from .outcome import Outcome
from .merge import InterleavedMerge, OrderedMerge, Unsorted, sort_key
from .parse import ItemParser, ParseError
from .paths import DottedPath
from .split import ItemSplitter, UnreadableField, field_reader

Merge = InterleavedMerge | OrderedMerge
Encoder = JSONListEncoder | NDJSONEncoder


# -- actions: what the shell carries out --------------------------------------------


@dataclass(frozen=True, slots=True)
class Pause:
    """Stop reading this shard's transport (TCP backpressure)."""

    shard: int


@dataclass(frozen=True, slots=True)
class Resume:
    shard: int


@dataclass(frozen=True, slots=True)
class Cancel:
    """Stop this shard's call and close its connection; it reports nothing more."""

    shard: int


@dataclass(frozen=True, slots=True)
class Commit:
    """Send the status line and headers; the body follows."""

    status: int
    content_type: bytes


@dataclass(frozen=True, slots=True)
class Write:
    data: bytes


@dataclass(frozen=True, slots=True)
class Finish:
    """The document is complete: end the response."""


@dataclass(frozen=True, slots=True)
class Answer:
    """Answer with this JSON error instead of a list, and end the response."""

    status: int
    body: bytes
    retry_after: int | None = None  # seconds, for a Retry-After field


@dataclass(frozen=True, slots=True)
class Abort:
    """End the client's connection without ending the document: what was
    written still reaches the client, the end of the body never does."""


@dataclass(frozen=True, slots=True)
class Later:
    """Call :meth:`Scatter.tick` once the current reactor turn is over."""


Action = Pause | Resume | Cancel | Commit | Write | Finish | Answer | Abort | Later
FINISH, ABORT, LATER = Finish(), Abort(), Later()
NOTHING: tuple[Action, ...] = ()

# A shard's state; only a READING shard has a call running.
READING, ENDED, FAILED, RELEASED, STOPPED = "reading", "ended", "failed", "released", "stopped"


class _Shard:
    """One shard's part of the request."""

    __slots__ = ("index", "name", "parser", "start", "returned", "consumed", "delivered",
                 "state", "error", "paused", "answered")

    def __init__(self, index: int, name: str, parser: ItemParser | ItemSplitter,
                 start: int) -> None:
        self.index, self.name, self.parser, self.start = index, name, parser, start
        self.returned = 0  # items it sent
        self.consumed = 0  # items this page used up: skipped by the offset or delivered
        self.delivered = 0  # items written to the client
        self.state = READING  # ENDED cleanly, FAILED, RELEASED (not needed), STOPPED (no outcome)
        self.error: ShardError | None = None
        self.paused = False
        self.answered = False  # its 2xx headers are in


class Scatter:
    """The state machine of one list request; build it with :func:`scatter_for`."""

    def __init__(
        self,
        shards: Sequence[str],
        prefix: str,
        encoder: Encoder,
        merge: Merge | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
        quota: int | None = None,
        starts: Mapping[str, int] | None = None,
        total: str | None = None,
        id_fields: Sequence[DottedPath] = (),
        cursor: Callable[[dict[str, int]], str] | None = None,
        strict: bool = False,
        queue_bound: int = 128,
        owner_field: DottedPath | None = None,
        foreign: Callable[[str, Any], bool] | None = None,
        retry_after: int = 1,
        strict_buffer: int = 1 << 20,
        native: bool = False,
    ) -> None:
        starts = starts or {}
        if native != encoder.raw:
            raise ValueError("the native splitter's items need a raw encoder, and only they do")
        parser = ItemSplitter if native else ItemParser
        self._shards = [_Shard(i, name, parser(prefix, total), starts.get(name, 0))
                        for i, name in enumerate(shards)]
        self._encoder = encoder
        self._merge = merge if merge is not None else InterleavedMerge(len(shards))
        self._ordered = isinstance(self._merge, OrderedMerge)
        self._queue_bound = queue_bound  # per shard, sorted merge only
        self._strict = strict
        self._want_total = bool(total)
        self._id_paths = tuple(id_fields)
        self._raw_ids = ids.raw_globalizer(self._id_paths) if native and id_fields else None
        # Items that leave as the shard's bytes, untouched: a sorted merge's
        # batches (often one item each) are then joined in one go.
        self._plain = native and not id_fields and owner_field is None
        self._cursor = cursor
        # Is this item of that shard another shard's? ``foreign(shard, owner)``
        # is asked with the item's ``owner_field`` (its tenant). Such an item
        # is used up (its shard's position moves on) but never sent.
        self._foreign = foreign if owner_field is not None else None
        self._owner: Callable[[Any], Any] | None = None
        if owner_field is not None:
            self._owner = field_reader(owner_field) if native else owner_field.lookup
        # An empty page whose only missing items are failed shards' is a 503:
        # retry after that long, with a cursor at this page's start.
        self._retry_after = retry_after
        # Strict mode holds the items of shards that answered until every shard
        # has: at most this many bytes, then those shards are paused.
        self._strict_buffer = strict_buffer
        self._buffered = 0  # bytes in _out
        self._skip = offset
        self._left = limit  # items still to deliver
        self._quota = quota
        self._out: list[bytes] = []  # encoded bytes not yet handed out
        self._actions: list[Action] = []
        self._started = False  # the document's head is encoded
        self.closed = False  # the meta is encoded: the document is complete
        self._committed = False  # the status line was sent
        self._over = False  # finished, answered, aborted, or the client is gone
        self._client_paused = False
        self._paused = 0  # shards reading and paused
        self._reading = len(self._shards)  # shards READING
        self._ticks_asked = 0  # Later actions given ...
        self._ticks_seen = 0  # ... and ticks received
        self._strict_tick = 0  # a strict failure: answered at this tick (0: none)
        self._dirty = False  # a shard was closed: pauses and the answer need a look

    # -- shard events ------------------------------------------------------------

    def response(self, shard: int, status: int, attempts: int = 1) -> Sequence[Action]:
        """A shard's response headers. Not 2xx: it failed, and :meth:`reading`
        says so (its body is not wanted)."""
        rec = self._shards[shard]
        if rec.state is not READING:
            return NOTHING
        if 200 <= status < 300:
            rec.answered = True
            if self._strict and not self._committed:
                return self._sync()  # it may have been the last one to answer
            return NOTHING
        self._close(rec, FAILED, ShardError("status", f"the shard answered {status}",
                                            status=status, attempts=attempts), cancel=False)
        return self._sync()

    def data(self, shard: int, data: bytes) -> Sequence[Action]:
        """A chunk of a shard's body: the hot path."""
        rec = self._shards[shard]
        if rec.state is not READING:
            return NOTHING
        try:
            items = rec.parser.feed(data)
        except ParseError as e:
            self._parse_failed(rec, e, cancel=True)
            return self._sync()
        if items:
            self._push(rec, items, cancel=True)
        if self._dirty or self._left is not None and self._left <= 0:
            return self._sync()
        if not rec.paused and self._hold(rec):
            self._set_paused(rec, True)
        if self._ordered:
            if self._paused and not self._client_paused:
                self._resume_drained()  # this shard's items may have let others' leave
        if not self._committed and self._ready():
            self._output()  # the first item goes out now
        else:
            self._later()
        return self._emit()

    def end(self, shard: int) -> Sequence[Action]:
        """The shard's body ended cleanly at the HTTP level."""
        rec = self._shards[shard]
        if rec.state is not READING:
            return NOTHING
        try:
            items = rec.parser.close()
        except ParseError as e:
            self._parse_failed(rec, e, cancel=False)
            return self._sync()
        if self._push(rec, items, cancel=False):
            self._close(rec, ENDED, cancel=False)
        return self._sync()

    def failed(self, shard: int, error: ShardError) -> Sequence[Action]:
        """The shard's call failed; items it already yielded stay delivered."""
        rec = self._shards[shard]
        if rec.state is not READING:
            return NOTHING
        self._close(rec, FAILED, error, cancel=False)
        return self._sync()

    # -- the client's and the reactor's events -----------------------------------

    def tick(self) -> Sequence[Action]:
        """The reactor turn that :class:`Later` asked to wait for is over."""
        self._ticks_seen += 1
        if self._over:
            return NOTHING
        if self._strict_tick:
            if self._ticks_seen >= self._strict_tick:  # the turn of the failure is over
                self._strict_failure()
            return self._emit()
        if self._ordered and self._paused and not self._client_paused:
            self._resume_drained()
        self._output()
        return self._emit()

    def client_paused(self) -> Sequence[Action]:
        """The client's transport is full: hold every shard."""
        self._client_paused = True
        for rec in self._shards:
            if rec.state is READING and not rec.paused:
                self._set_paused(rec, True)
        return self._emit()

    def client_resumed(self) -> Sequence[Action]:
        self._client_paused = False
        return self._sync()

    def client_gone(self) -> Sequence[Action]:
        """The client disconnected: stop every shard."""
        if self._over:
            return NOTHING
        self._over = True
        self._stop_all()
        return self._emit()

    # -- what the shell may ask ----------------------------------------------------

    def reading(self, shard: int) -> bool:
        """Is this shard's body still wanted? (a sink's answer to its call)"""
        return self._shards[shard].state is READING

    @property
    def done(self) -> bool:
        """Every shard has ended, failed or been let go."""
        return not self._reading

    @property
    def all_failed(self) -> bool:
        return all(rec.state is FAILED for rec in self._shards)

    @property
    def failures(self) -> dict[int, ShardError]:
        return {rec.index: rec.error for rec in self._shards if rec.error is not None}

    def outcome(self) -> Outcome:
        """For the access log and the metrics."""
        return Outcome(asked=len(self._shards),
                       failed={rec.name: rec.error.code for rec in self._shards
                               if rec.error is not None},
                       items={rec.name: rec.delivered for rec in self._shards})

    def meta(self) -> dict[str, Any]:
        """The list's meta, once the document ends."""
        shards = self._shards
        meta: dict[str, Any] = {
            "shards": self._shards_meta(),
            # One field for "is this everything the request asked for?"
            "complete": all(rec.error is None for rec in shards),
        }
        if self._want_total:
            known = [rec.parser.total for rec in shards
                     if rec.parser.total is not None and rec.error is None]
            meta["total"] = sum(known) if known else None
            meta["total_excludes"] = [rec.name for rec in shards
                                      if rec.parser.total is None or rec.error is not None]
        if self._cursor is not None:
            more = any(self._has_more(rec) for rec in shards)
            meta["next_cursor"] = self._cursor(self._positions()) if more else None
        return meta

    def _shards_meta(self, sent: bool = True) -> dict[str, Any]:
        """``sent``: the items counted as delivered reached the client (not
        in an error answer, which replaces them)."""
        shards = self._shards
        failed = [
            {
                "shard": rec.name,
                "error": rec.error.code,
                "message": rec.error.message,
                "status": rec.error.status,
                "attempts": rec.error.attempts,
                "items_delivered": rec.delivered if sent else 0,
            }
            for rec in shards if rec.error is not None
        ]
        meta: dict[str, Any] = {
            "total": len(shards),
            "succeeded": sum(1 for rec in shards if rec.state in (ENDED, RELEASED)),
            "failed": failed,
        }
        stopped = [rec.name for rec in shards if rec.state is STOPPED]
        if stopped:  # an error answer: shards let go of with no outcome, not failed
            meta["cancelled"] = stopped
        return meta

    # -- decisions ---------------------------------------------------------------

    def _emit(self) -> Sequence[Action]:
        actions = self._actions
        if not actions:
            return NOTHING
        self._actions = []
        return actions

    def _later(self) -> None:
        """A tick at the end of the turn; one asked in an earlier turn will do."""
        if self._ticks_asked == self._ticks_seen:
            self._ticks_asked += 1
            self._actions.append(LATER)

    def _sync(self) -> Sequence[Action]:
        """After a shard closed or the client resumed: let go of the shards the
        page no longer needs, set every shard's pause, then write."""
        self._dirty = False
        limit_reached = self._left is not None and self._left <= 0
        if limit_reached:
            for rec in self._shards:
                if rec.state is READING and not self._wanted(rec):
                    self._close(rec, RELEASED, cancel=True)
        for rec in self._shards:
            if rec.state is READING:
                hold = self._hold(rec)
                if hold != rec.paused:
                    self._set_paused(rec, hold)
        self._output()
        return self._emit()

    def _hold(self, rec: _Shard) -> bool:
        """Should this shard's transport be paused now?"""
        if self._client_paused:
            return True
        if self._left is not None and self._left <= 0:
            return False  # past the limit a shard is read only briefly: never held
        if self._ordered and self._merge.queued(rec.index) >= self._queue_bound:
            return True  # its queue is full: the merge waits for another shard's head
        # Strict and not committed: what waits for the last shard's headers is bounded.
        return self._strict and not self._committed and self._buffered >= self._strict_buffer

    def _set_paused(self, rec: _Shard, paused: bool) -> None:
        rec.paused = paused
        self._paused += 1 if paused else -1
        self._actions.append(Pause(rec.index) if paused else Resume(rec.index))

    def _resume_drained(self) -> None:
        """Resume the shards held for a full queue (or a strict buffer) that has room again."""
        for rec in self._shards:
            if rec.paused and rec.state is READING and not self._hold(rec):
                self._set_paused(rec, False)

    def _output(self) -> None:
        """Commit, write and finish, or answer instead, as far as the state allows."""
        if self._over:
            return
        actions = self._actions
        if self._strict and any(rec.error is not None for rec in self._shards):
            if self._committed:
                self._strict_failure()
            elif not self._strict_tick:
                # Answer at the end of this reactor turn, so that shards failing
                # together (one deadline) are all named: a tick of its own, since
                # one asked in an earlier turn may come before this turn is over.
                self._ticks_asked += 1
                self._strict_tick = self._ticks_asked
                actions.append(LATER)
            return
        if not self._committed:
            if not self._ready():
                return
            if self._strict and not all(r.answered or r.state is not READING
                                        for r in self._shards):
                return  # strict: no 200 before every shard's 2xx headers
            if self.all_failed and not self._started:  # items produced first are a list
                status, code = failure_answer([r.error for r in self._shards if r.error],
                                              "shards_timeout", "shards_failed")
                self._answer(status, code, "every shard failed; see meta.shards.failed")
                return
            if self.done and not self._started and self._only_failed_have_more():
                names = ", ".join(r.name for r in self._shards if r.error is not None)
                self._answer(503, "shards_unavailable",
                             f"this page has no items because shard {names} failed and every "
                             "other shard has nothing more; retry the same request after "
                             "Retry-After", retry_after=self._retry_after,
                             cursor=self._cursor(self._positions()) if self._cursor else None)
                return
            self._committed = True
            actions.append(Commit(200, self._encoder.content_type))
            if self._paused and not self._client_paused:
                self._resume_drained()  # the strict buffer's hold is over
        data = self._take()
        if data:
            actions.append(Write(data))
        if self.closed:
            self._over = True
            actions.append(FINISH)

    def _strict_failure(self) -> None:
        """partial=false and a shard failed: before the first byte that is a
        502/504 naming the failures; after it, the connection is aborted (no
        terminating chunk, no closing bracket)."""
        self._over = True
        self._stop_all()
        if self._committed:
            self._actions.append(ABORT)
            return
        errors = [rec.error for rec in self._shards if rec.error is not None]
        status, code = failure_answer(errors, "shard_timeout", "shard_failed",
                                      every_shard=len(errors) == len(self._shards))
        names = ", ".join(rec.name for rec in self._shards if rec.error is not None)
        self._answer(status, code, f"shard {names} failed and this request asks for a complete "
                     "result (partial=false); see meta.shards.failed")

    def _answer(self, status: int, code: str, message: str, *, retry_after: int | None = None,
                **extra: Any) -> None:
        """An error instead of the list; its meta tells only what is true of
        the shards (no cursor, no totals: there is no page)."""
        self._over = True
        body = error_body(code, message, **extra,
                          meta={"shards": self._shards_meta(sent=False)})
        self._actions.append(Answer(status, body, retry_after))

    def _only_failed_have_more(self) -> bool:
        """Did some shard fail, and may only failed shards still hold items?"""
        failed = False
        for rec in self._shards:
            if rec.error is not None:
                failed = True
            elif self._has_more(rec):
                return False
        return failed

    def _stop_all(self) -> None:
        for rec in self._shards:
            if rec.state is READING:  # no drain: nothing more is delivered or counted
                rec.state, rec.paused = STOPPED, False
                self._actions.append(Cancel(rec.index))
        self._paused = self._reading = 0

    def _close(self, rec: _Shard, state: str, error: ShardError | None = None, *,
               cancel: bool) -> None:
        """A shard's part is over; ``cancel``: its call is still running."""
        if rec.state is READING:
            self._reading -= 1
            if cancel:
                self._actions.append(Cancel(rec.index))
            if rec.paused:
                rec.paused = False
                self._paused -= 1
        rec.state, rec.error = state, error
        self._dirty = True
        self._merge.end(rec.index)
        self._drain()

    def _wanted(self, rec: _Shard) -> bool:
        """Past the limit: does the page still need this shard's bytes?"""
        if (self._want_total and rec.parser.total is None
                and self._quota is not None and rec.returned <= self._quota):
            return True  # bounded: the shard was asked for a limited number of items
        return self._merge.queued(rec.index) == 0  # not yet known whether it has more

    # -- the document ------------------------------------------------------------

    def _ready(self) -> bool:
        """Is there something for the client (an item, or the end)?"""
        return bool(self._out) or (not self.closed and self.done)

    def _take(self) -> bytes:
        """All bytes ready for the client now; the head first, the meta last."""
        out = self._out
        if not self.closed and self.done:
            if not self._started:
                out.insert(0, self._encoder.begin())
                self._started = True
            out.append(self._encoder.end(self.meta()))
            self.closed = True
        if not out:
            return b""
        self._out = []
        self._buffered = 0
        return b"".join(out)

    def _positions(self) -> dict[str, int]:
        return {rec.name: rec.start + rec.consumed for rec in self._shards}

    def _has_more(self, rec: _Shard) -> bool:
        """May this shard hold items after its position? (True when unsure.)"""
        if rec.error is not None or self._merge.queued(rec.index):
            return True
        if rec.state is not ENDED:
            return True  # let go of with nothing queued cannot happen; unsure
        total = rec.parser.total
        if total is not None:  # the shard's own count is the best evidence (it may cap pages)
            return rec.start + rec.consumed < total
        if self._quota is None or rec.returned < self._quota:
            return False
        return True  # it sent exactly what it was asked for: there may be more

    def _parse_failed(self, rec: _Shard, error: ParseError, *, cancel: bool) -> None:
        if error.items:  # complete items before the bad bytes are good items
            if not self._push(rec, error.items, cancel=cancel):
                return
        self._close(rec, FAILED, ShardError(error.code, str(error)), cancel=cancel)

    def _push(self, rec: _Shard, items: list[Any], *, cancel: bool) -> bool:
        """Queue a shard's items and deliver what is next; False if it failed."""
        rec.returned += len(items)
        try:
            self._merge.push(rec.index, items)
        except Unsorted as e:
            self._close(rec, FAILED, ShardError(
                "unsorted", f"{e}; later items of this shard were dropped"), cancel=cancel)
            return False
        except UnreadableField as e:
            self._close(rec, FAILED, ShardError(
                "unreadable_item", f"{e}: the sort key; this item and the shard's later "
                "ones were dropped"), cancel=cancel)
            return False
        self._drain()
        return rec.state is READING

    def _drain(self) -> None:
        while True:
            left = self._left
            if left is not None and left <= 0:
                return
            budget = None if left is None else self._skip + left
            batches = self._merge.pop(budget)
            if not batches:
                return
            if not self._deliver(batches) or budget is None:
                return  # no item was another shard's: the budget is spent

    def _deliver(self, batches: list[tuple[int, list[Any]]]) -> int:
        """Skip, rewrite, encode; the number of items dropped as another shard's."""
        if self._plain and not self._skip:
            self._deliver_plain(batches)
            return 0
        out = self._out
        broken: dict[int, ShardError] = {}  # shard -> why its later items are dropped
        dropped = 0
        for shard, items in batches:
            rec = self._shards[shard]
            if shard in broken:
                continue
            if self._foreign is not None:
                n = len(items)
                items, error = self._own(rec, items)
                if error is not None:
                    broken[shard] = error
                rec.consumed += n - len(items)
                dropped += n - len(items)
                if not items:
                    continue
            if self._skip:
                n = min(self._skip, len(items))
                self._skip -= n
                rec.consumed += n
                items = items[n:]
                if not items:
                    continue
            if not self._started:
                out.append(self._encoder.begin())
                self._started = True
            if self._raw_ids is not None or self._id_paths:
                items, rewritten = self._globalize(rec, items)
            else:
                rewritten = len(items)
            chunk, good = self._encode(items if rewritten == len(items) else items[:rewritten])
            if good:
                rec.delivered += good
                rec.consumed += good
                if self._left is not None:
                    self._left -= good
                out.append(chunk)
                self._buffered += len(chunk)
            if good < len(items):
                broken.setdefault(shard, ShardError(
                    "unencodable_item", "an item of this shard could not be encoded (nested "
                    "too deeply, or a lone surrogate escape?); the shard's later items were "
                    "dropped"))
        for shard, error in broken.items():  # its later items would leave a hole: drop them
            rec = self._shards[shard]
            self._merge.discard(shard)
            if rec.state in (READING, ENDED):  # an ended shard's queued items count too
                self._close(rec, FAILED, error, cancel=True)
        return dropped

    def _deliver_plain(self, batches: list[tuple[int, list[Any]]]) -> None:
        """Items as the shards' bytes, nothing to drop or rewrite: each
        shard's count moves on and every batch goes out in one chunk (joining
        bytes cannot fail, so no item can break its shard here)."""
        shards = self._shards
        good = 0
        for shard, items in batches:
            rec = shards[shard]
            n = len(items)
            rec.delivered += n
            rec.consumed += n
            good += n
        if not good:
            return
        if not self._started:
            self._out.append(self._encoder.begin())
            self._started = True
        chunk = self._encoder.items(batches[0][1] if len(batches) == 1
                                    else [item for _, items in batches for item in items])
        if self._left is not None:
            self._left -= good
        self._out.append(chunk)
        self._buffered += len(chunk)

    def _own(self, rec: _Shard, items: list[Any]) -> tuple[list[Any], ShardError | None]:
        """The items that are this shard's own (``owner_field``), up to the
        first whose owner cannot be read (then why)."""
        foreign, owner = self._foreign, self._owner
        assert foreign is not None and owner is not None
        kept: list[Any] = []
        for item in items:
            try:
                value = owner(item)
            except UnreadableField as e:
                return kept, ShardError("unreadable_item", f"{e}: the owner field; this item "
                                        "and the shard's later ones were dropped")
            if not foreign(rec.name, value):
                kept.append(item)
        return kept, None

    def _globalize(self, rec: _Shard, items: list[Any]) -> tuple[list[Any], int]:
        """Items with global ids, and how many were rewritten before one could
        not be (decoded or encoded again: too deep, a lone surrogate)."""
        rewrite, paths = self._raw_ids, self._id_paths
        out: list[Any] = []
        try:
            for item in items:
                if rewrite is not None:
                    out.append(rewrite(item, rec.name))
                else:
                    ids.globalize(item, paths, rec.name)
                    out.append(item)
        except Exception:
            return out + items[len(out):], len(out)
        return out, len(out)

    def _encode(self, items: list[Any]) -> tuple[bytes, int]:
        """Encoded items and how many; on an item that cannot be encoded, the
        ones before it."""
        encoder = self._encoder
        try:
            return encoder.items(items), len(items)
        except Exception:
            pass
        for n, item in enumerate(items):
            try:
                encoder.check(item)
            except Exception:
                return (encoder.items(items[:n]) if n else b""), n
        return b"", 0  # each alone is fine, together not: fail the shard, never raise


def scatter_for(route: Route, query: paging.ListQuery, shards: Sequence[str],
                accept: str | None, secret: bytes | None, queue_bound: int = 128,
                foreign: Callable[[str, Any], bool] | None = None,
                retry_after: int = 1, native: bool = False) -> Scatter:
    """The one way a list request's state machine is built: from the route,
    the client's parsed list query, the shards asked, its Accept header and
    the cursor secret. ``foreign(shard, owner)`` filters items by the
    route's ``owner_field``; ``native``: items pass through as bytes."""
    options = paging.options(route)
    merge: Merge
    if query.sort is not None:
        name = query.sort_path or ""
        merge = OrderedMerge(len(shards), sort_key(options.sort_path(name) or name,
                                                   query.descending, raw=native))
    else:
        merge = InterleavedMerge(len(shards))
    cursor_page = query.positions is not None
    return Scatter(
        shards,
        options.items,
        encoder_for(accept, raw=native),
        merge,
        limit=query.limit,
        offset=0 if cursor_page else query.offset,
        quota=query.quota(),
        starts=query.positions,
        total=options.total,
        id_fields=route.id_fields,
        cursor=lambda positions: paging.encode_cursor(route, query, positions, secret),
        strict=not (options.partial if query.partial is None else query.partial),
        queue_bound=queue_bound,
        owner_field=options.owner_field,
        foreign=foreign,
        retry_after=retry_after,
        native=native,
    )
