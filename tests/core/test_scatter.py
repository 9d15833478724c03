"""The scatter state machine, fed events directly: the document it builds, and
every decision it returns as actions (write, pause, cancel, commit, answer,
abort). The property tests run whole cursor chains through it with
simulated shards that answer exactly what the gateway asks for (sort, limit,
offset), feeding their bytes in random interleavings and chunk sizes.
"""

from __future__ import annotations

import functools
import json
from urllib.parse import parse_qs

from hypothesis import given, settings
from hypothesis import strategies as st

from orders import reference_cmp

from shardstream.core import config, paging, split
from shardstream.core.encode import JSONListEncoder, NDJSONEncoder
from shardstream.core.errors import ShardError
from shardstream.core.merge import OrderedMerge, sort_key
from shardstream.core.scatter import (ABORT, FINISH, LATER, Answer, Cancel, Commit, Pause, Resume,
                                      Scatter, Write, scatter_for)

SECRET = b"s" * 32


class Shell:
    """Carries out a Scatter's actions as the Twisted shell does, and records them."""

    def __init__(self, scatter: Scatter) -> None:
        self.sc = scatter
        self.body = b""
        self.status: int | None = None
        self.content_type: bytes | None = None
        self.finished = self.aborted = False
        self.answer: Answer | None = None
        self.cancelled: list[int] = []
        self.paused: set[int] = set()
        self.later = 0  # ticks asked for and not yet given
        self.log: list = []  # every action, in order

    def run(self, actions) -> None:
        for a in actions:
            self.log.append(a)
            assert not (self.finished or self.aborted or self.answer), f"{a} after the end"
            if isinstance(a, Commit):
                assert self.status is None
                self.status, self.content_type = a.status, a.content_type
            elif isinstance(a, Write):
                assert self.status == 200
                self.body += a.data
            elif a is FINISH:
                self.finished = True
            elif a is ABORT:
                self.aborted = True
            elif isinstance(a, Answer):
                self.answer = a
            elif isinstance(a, Cancel):
                self.cancelled.append(a.shard)
            elif isinstance(a, Pause):
                self.paused.add(a.shard)
            elif isinstance(a, Resume):
                self.paused.discard(a.shard)
            elif a is LATER:
                self.later += 1

    def response(self, i: int, status: int) -> bool:
        self.run(self.sc.response(i, status))
        return self.sc.reading(i)

    def data(self, i: int, chunk: bytes) -> bool:
        self.run(self.sc.data(i, chunk))
        return self.sc.reading(i)

    def end(self, i: int) -> None:
        self.run(self.sc.end(i))

    def failed(self, i: int, error: ShardError) -> None:
        self.run(self.sc.failed(i, error))

    def turn(self) -> None:
        """The reactor turn is over: the ticks the scatter asked for."""
        while self.later:
            self.later -= 1
            self.run(self.sc.tick())

    def doc(self):
        return json.loads(self.body)


def body(n, shard):
    return json.dumps({"data": [{"s": shard, "i": i} for i in range(n)], "meta": {"total": n}}).encode()


def sorted_body(keys):
    return json.dumps({"data": [{"k": k} for k in keys]}).encode()


# -- the document ------------------------------------------------------------------------


def test_scatter_streams_items_as_they_arrive_and_closes_with_meta():
    sc = Scatter(["a", "b"], "data.item", JSONListEncoder())
    out = Shell(sc)
    assert out.body == b"" and out.status is None
    b = body(3, "a")
    assert out.data(0, b[:30])
    first = out.body
    assert first.startswith(b'{"data":[{"s":"a","i":0}')
    assert out.data(0, b[30:])
    out.end(0)
    assert not sc.done
    out.failed(1, ShardError("idle_timeout", "no body data for 1 s"))
    assert sc.done and out.finished
    doc = out.doc()
    assert [x["i"] for x in doc["data"]] == [0, 1, 2]
    assert doc["meta"]["shards"] == {
        "total": 2, "succeeded": 1,
        "failed": [{"shard": "b", "error": "idle_timeout", "message": "no body data for 1 s",
                    "status": None, "attempts": 1, "items_delivered": 0}],
    }
    assert sc.closed and sc.tick() == ()


def test_scatter_counts_items_delivered_before_a_shard_failed():
    sc = Scatter(["a"], "data.item", JSONListEncoder())
    out = Shell(sc)
    b = body(10, "a")
    cut = b.index(b'"i": 4}') + 7
    assert out.data(0, b[:cut])
    assert not out.data(0, b"garbage")
    assert not sc.reading(0)
    doc = out.doc()
    assert len(doc["data"]) == 5
    (f,) = doc["meta"]["shards"]["failed"]
    assert (f["error"], f["items_delivered"]) == ("malformed_json", 5)


def test_scatter_truncated_body_fails_at_end():
    sc = Scatter(["a"], "data.item", JSONListEncoder())
    out = Shell(sc)
    b = body(4, "a")
    out.data(0, b[: len(b) // 2])
    out.end(0)
    assert sc.all_failed
    assert sc.failures[0].code == "truncated"


def test_scatter_ignores_events_after_a_shard_ended():
    sc = Scatter(["a"], "data.item", JSONListEncoder())
    out = Shell(sc)
    out.data(0, body(1, "a"))
    out.end(0)
    assert not out.data(0, b"more")
    assert sc.failed(0, ShardError("x", "y")) == ()
    assert out.doc()["meta"]["shards"]["failed"] == []


def test_scatter_with_no_items_at_all_is_still_a_document():
    sc = Scatter(["a", "b"], "data.item", NDJSONEncoder())
    out = Shell(sc)
    out.data(0, b'{"data":[]}')
    out.end(0)
    out.data(1, b'{"data":[]}')
    out.end(1)
    assert out.body == b'{"meta":{"shards":{"total":2,"succeeded":2,"failed":[]},"complete":true}}\n'
    assert out.content_type == b"application/x-ndjson"


def _nest(depth):
    x = 1
    for _ in range(depth - 1):
        x = {"a": x}
    return {"id": 1, "a": x}  # `depth` containers in all


def test_an_item_as_deep_as_orjson_allows_is_delivered_in_a_batch_and_nothing_is_lost():
    """orjson's depth limit counts the batch's own list: an item that encodes
    alone must not fail, or take other shards' items down with it."""
    deep = _nest(254)
    deep["k"] = 3
    sc = Scatter(["a", "b"], "data.item", JSONListEncoder(), OrderedMerge(2, key=lambda i: i["k"]))
    out = Shell(sc)
    out.data(0, json.dumps({"data": [{"k": 4}, {"k": 5}]}).encode())
    out.data(1, json.dumps({"data": [{"k": 2}, deep, {"k": 6}]}).encode())
    out.end(0)
    out.end(1)
    doc = out.doc()
    assert [i["k"] for i in doc["data"]] == [2, 3, 4, 5, 6]
    assert doc["meta"]["shards"]["failed"] == []


def test_an_unencodable_item_queued_by_a_shard_that_had_ended_fails_that_shard():
    """Its items after the bad one are dropped: the meta must say so, not
    count the shard as complete."""
    sc = Scatter(["a", "b"], "data.item", JSONListEncoder(), OrderedMerge(2, key=lambda i: i["k"]))
    out = Shell(sc)
    out.data(0, json.dumps({"data": [{"k": 1}, _nest(400) | {"k": 2}, {"k": 3}]}).encode())
    out.end(0)  # ended cleanly, its items still queued: shard b has said nothing
    out.data(1, sorted_body([5]))
    out.end(1)
    doc = out.doc()
    assert [i["k"] for i in doc["data"]] == [1, 5]
    (f,) = doc["meta"]["shards"]["failed"]
    assert (f["shard"], f["error"], f["items_delivered"]) == ("a", "unencodable_item", 1)
    assert doc["meta"]["shards"]["succeeded"] == 1


# -- the decisions -------------------------------------------------------------------------


def test_the_first_item_is_written_at_once_and_later_bytes_once_per_turn():
    sc = Scatter(["a", "b"], "data.item", JSONListEncoder())
    out = Shell(sc)
    out.data(1, b'{"data":[{"i":1},')
    assert [type(a) for a in out.log] == [Commit, Write]  # no tick waited for
    assert out.status == 200 and out.content_type == b"application/json"
    n = len(out.log)
    out.data(1, b'{"i":2},')
    out.data(0, b'{"data":[{"i":3}')
    assert out.log[n:] == [LATER] and out.body == b'{"data":[{"i":1}'  # one tick for both
    out.turn()
    assert out.body == b'{"data":[{"i":1},{"i":2},{"i":3}'


def test_a_sorted_merge_pauses_a_shard_whose_queue_is_full_and_resumes_it_when_drained():
    sc = Scatter(["fast", "slow"], "data.item", JSONListEncoder(),
                 OrderedMerge(2, sort_key("k")), queue_bound=3)
    out = Shell(sc)
    out.data(0, b'{"data":[{"k":1},{"k":2},')
    assert out.paused == set()
    out.data(0, b'{"k":3},{"k":4},')
    assert out.paused == {0}  # four queued, waiting for the slow shard's head
    out.turn()
    assert out.paused == {0}  # still full: nothing could leave
    out.data(1, sorted_body([10]))
    out.turn()
    assert out.paused == set() and Resume(0) in out.log
    assert [i["k"] for i in json.loads(out.body + b"]}")["data"]] == [1, 2, 3, 4]


def test_a_slow_client_pauses_every_shard_and_its_return_resumes_them():
    sc = Scatter(["a", "b", "c"], "data.item", JSONListEncoder())
    out = Shell(sc)
    out.data(2, body(1, "c"))
    out.end(2)
    out.run(sc.client_paused())
    assert out.paused == {0, 1}  # shard c has ended: nothing to hold
    out.run(sc.client_resumed())
    assert out.paused == set()


def test_control_actions_come_before_the_bytes_they_go_with():
    """The shell runs actions in order: a write that fills the client's buffer
    pauses us at once, and a resume given after it would undo that pause."""
    sc = Scatter(["a", "b"], "data.item", JSONListEncoder(), OrderedMerge(2, sort_key("k")),
                 queue_bound=1)
    out = Shell(sc)
    out.data(0, b'{"data":[{"k":1},{"k":2},')
    out.data(1, b'{"data":[{"k":3},')
    out.turn()
    kinds = [type(a) for a in out.log]
    assert Resume in kinds and Write in kinds
    assert max(i for i, k in enumerate(kinds) if k is Resume) < max(
        i for i, k in enumerate(kinds) if k is Write)


def test_once_the_limit_is_reached_the_shards_not_needed_are_cancelled():
    """Past the limit a shard is read only until it is known whether it has more."""
    sc = Scatter(["a", "b", "c"], "data.item", JSONListEncoder(), limit=2, quota=2)
    out = Shell(sc)
    out.data(0, b'{"data":[{"i":1},{"i":2},')  # the page is full
    assert out.cancelled == [] and sc.reading(1) and sc.reading(2)
    out.data(1, b'{"data":[{"i":10},')
    assert out.cancelled == [1]  # b has more: all the next cursor needs to know
    out.data(0, b'{"i":3}')
    assert out.cancelled == [1, 0]
    out.data(2, b'{"data":[]}')
    out.end(2)
    assert out.finished
    doc = out.doc()
    assert [i["i"] for i in doc["data"]] == [1, 2]
    assert doc["meta"]["shards"]["succeeded"] == 3


def test_a_shard_that_fails_in_the_gateway_is_cancelled_but_one_that_failed_itself_is_not():
    sc = Scatter(["a", "b", "c"], "data.item", JSONListEncoder())
    out = Shell(sc)
    out.data(0, b'{"data":[nope')
    assert out.cancelled == [0]
    out.failed(1, ShardError("connect_refused", "connection refused"))
    out.run(sc.response(2, 503, attempts=2))
    assert out.cancelled == [0] and not sc.reading(2)  # their calls ended themselves
    assert out.answer is not None and out.status is None
    assert json.loads(out.answer.body)["error"]["meta"]["shards"]["failed"][2]["attempts"] == 2


def test_every_shard_failing_first_is_an_error_answer_with_the_meta():
    sc = Scatter(["a", "b"], "data.item", JSONListEncoder())
    out = Shell(sc)
    out.failed(0, ShardError("first_byte_timeout", "no response headers within 1 s"))
    assert out.answer is None
    out.failed(1, ShardError("idle_timeout", "no body data for 1 s"))
    assert out.answer.status == 504 and out.status is None
    error = json.loads(out.answer.body)["error"]
    assert error["code"] == "shards_timeout"
    assert [f["shard"] for f in error["meta"]["shards"]["failed"]] == ["a", "b"]


def test_strict_mode_names_every_shard_failing_in_the_same_turn():
    sc = Scatter(["a", "b", "c"], "data.item", JSONListEncoder(), strict=True)
    out = Shell(sc)
    out.failed(0, ShardError("connect_refused", "connection refused"))
    assert out.later and out.answer is None  # wait for the turn: others may fail with it
    out.failed(2, ShardError("connect_refused", "connection refused"))
    out.turn()
    assert out.cancelled == [1]
    assert out.answer.status == 502
    error = json.loads(out.answer.body)["error"]
    assert error["code"] == "shard_failed" and "shard a, c failed" in error["message"]


def test_a_strict_failure_waits_for_the_end_of_its_own_turn():
    """A tick asked for in an earlier turn may come first: it must not answer
    before the shards failing in this turn have failed too."""
    sc = Scatter(["a", "b"], "data.item", JSONListEncoder(), OrderedMerge(2, sort_key("k")),
                 strict=True)
    out = Shell(sc)
    out.data(0, b'{"data":[{"k":1},')  # waits for b's head; a tick is asked for
    assert out.later == 1
    out.failed(0, ShardError("total_timeout", "the shard did not finish within 1 s"))
    assert out.later == 2  # a tick of its own
    out.later -= 1
    out.run(sc.tick())  # the earlier one
    assert out.answer is None
    out.failed(1, ShardError("total_timeout", "the shard did not finish within 1 s"))
    out.turn()
    assert out.answer.status == 504
    assert "shard a, b failed" in json.loads(out.answer.body)["error"]["message"]


def test_strict_mode_aborts_a_committed_response():
    sc = Scatter(["a", "b"], "data.item", JSONListEncoder(), strict=True)
    out = Shell(sc)
    out.response(0, 200)
    out.data(0, b'{"data":[{"i":1},')
    assert out.status is None  # b has not answered yet
    out.response(1, 200)
    assert out.status == 200 and out.body == b'{"data":[{"i":1}'
    out.failed(1, ShardError("truncated", "the connection closed in the middle of the body"))
    assert out.aborted and out.cancelled == [0] and not out.finished


def test_a_client_gone_cancels_every_shard_still_reading_and_ends_the_machine():
    sc = Scatter(["a", "b", "c"], "data.item", JSONListEncoder())
    out = Shell(sc)
    out.data(0, b'{"data":[{"i":1},')
    out.failed(1, ShardError("connect_refused", "connection refused"))
    out.run(sc.client_gone())
    assert sorted(out.cancelled) == [0, 2]
    assert sc.data(0, b'{"i":2}]}') == () and sc.tick() == () and sc.client_gone() == ()


def test_the_factory_builds_from_route_query_accept_and_secret():
    route = config.parse({"shards": {"s1": {"urls": ["http://127.0.0.1:1"]}},
                          "routes": [{"path": "/x", "mode": "scatter", "items": "item",
                                      "sort": ["k"], "partial": False}]}).routes[0]
    q = paging.parse(route, {b"sort": [b"-k"], b"limit": [b"1"]}, SECRET)
    sc = scatter_for(route, q, ["a", "b"], "application/x-ndjson", SECRET)
    out = Shell(sc)
    out.data(0, b'[{"k":3},{"k":1}]')
    out.data(1, b'[{"k":2}]')
    out.end(1)
    out.end(0)
    assert out.content_type == b"application/x-ndjson"
    lines = out.body.splitlines()
    assert json.loads(lines[0]) == {"k": 3}  # descending, limit 1
    cursor = json.loads(lines[1])["meta"]["next_cursor"]
    parsed = paging.parse(route, {b"cursor": [cursor.encode()]}, SECRET, shards=["a", "b"])
    assert parsed.positions == {"a": 1, "b": 0}
    strict = scatter_for(route, q, ["a"], None, SECRET)
    assert strict.failed(0, ShardError("x", "y")) == [LATER]  # partial = false: strict


# -- whole cursor chains through the Scatter ---------------------------------------------

ROUTE = config.parse({"shards": {"s1": {"urls": ["http://127.0.0.1:1"]}},
                      "routes": [{"path": "/v3/events", "mode": "scatter", "items": "data.item",
                                  "sort": ["k", "p.q"], "max_limit": 50, "total": "meta.total",
                                  "id_fields": ["id"]}]}, "<test>").routes[0]
# No id to rewrite: on the native path, items leave as the shards' bytes untouched.
PLAIN_ROUTE = config.parse({"shards": {"s1": {"urls": ["http://127.0.0.1:1"]}},
                            "routes": [{"path": "/v3/events", "mode": "scatter",
                                        "items": "data.item", "sort": ["k", "p.q"],
                                        "max_limit": 50, "total": "meta.total"}]},
                           "<test>").routes[0]
ROUTES = st.sampled_from([ROUTE, PLAIN_ROUTE])

key_values = st.one_of(st.none(), st.integers(-3, 3), st.sampled_from(["a", "b", "B", "é"]))
shard_contents = st.lists(st.lists(key_values, max_size=12), min_size=1, max_size=4)


def args(**kw):
    return {k.encode(): [str(v).encode()] for k, v in kw.items()}


def shard_body(items, query: dict[str, list[str]]) -> bytes:
    """A shard that does what it is asked: sort (stable), offset, limit, total."""
    ordered = list(items)
    if "sort" in query:
        spec = query["sort"][0]
        ordered.sort(key=sort_key(spec.lstrip("-"), spec.startswith("-")))
    offset = int(query.get("offset", ["0"])[0])
    page = ordered[offset:]
    if "limit" in query:
        page = page[: int(query["limit"][0])]
    return json.dumps({"data": page, "meta": {"total": len(items)}}).encode()


NATIVE = [False, True] if split.NATIVE else [False]  # items decoded, or passed as bytes


def run_page(shards, route, client_args, rng, native=False):
    names = [f"s{i}" for i in range(len(shards))]
    q = paging.parse(route, client_args, SECRET, shards=names)
    sc = scatter_for(route, q, names, None, SECRET, native=native)
    out = Shell(sc)
    bodies = {}
    for i, name in enumerate(names):
        query = paging.shard_query(route, q, name).decode()
        bodies[i] = shard_body(shards[i], parse_qs(query))
    pending = dict(bodies)
    while pending:
        i = rng.choice(sorted(pending))
        body = pending[i]
        n = rng.randint(1, 40)
        chunk, pending[i] = body[:n], body[n:]
        out.data(i, chunk)
        if not pending[i]:
            del pending[i]
            out.end(i)
        for j in out.cancelled:
            pending.pop(j, None)
        if rng.random() < 0.5:
            out.turn()
    out.turn()
    assert sc.done and sc.closed and out.finished
    return out.doc()


@settings(max_examples=150, deadline=None)
@given(shard_contents, st.integers(1, 7), st.booleans(), st.booleans(), st.randoms(),
       st.sampled_from(NATIVE), ROUTES)
def test_following_cursors_returns_every_item_once_in_global_order(
        keys, page, descending, sorted_, rng, native, route):
    shards = [[{"k": k, "s": s, "n": n} if k is not None else {"s": s, "n": n}
               for n, k in enumerate(ks)] for s, ks in enumerate(keys)]
    first = {"limit": page}
    if sorted_:
        first["sort"] = "-k" if descending else "k"
    got, client_args, pages = [], args(**first), 0
    while True:
        doc = run_page(shards, route, client_args, rng, native)
        pages += 1
        assert len(doc["data"]) <= page
        got += doc["data"]
        assert doc["meta"]["total"] == sum(len(s) for s in shards)
        cursor = doc["meta"]["next_cursor"]
        if cursor is None:
            break
        assert doc["data"], "a cursor must not lead to an empty page here"
        client_args = args(cursor=cursor)
        assert pages < 100
    everything = [item for shard in shards for item in shard]
    assert sorted((i["s"], i["n"]) for i in got) == sorted((i["s"], i["n"]) for i in everything)
    if sorted_:
        def cmp(a, b):
            c = reference_cmp(a.get("k"), b.get("k"))
            if descending and a.get("k") is not None and b.get("k") is not None:
                c = -c
            return c or (a["s"] - b["s"]) or (a["n"] - b["n"])
        assert got == sorted(everything, key=functools.cmp_to_key(cmp))
    else:  # arrival order, but each shard's own order is kept
        for s in range(len(shards)):
            assert [i["n"] for i in got if i["s"] == s] == list(range(len(shards[s])))


@settings(max_examples=100, deadline=None)
@given(shard_contents, st.integers(0, 10), st.integers(1, 10), st.randoms(),
       st.sampled_from(NATIVE), ROUTES)
def test_limit_and_offset_slice_the_merged_list(keys, offset, limit, rng, native, route):
    shards = [[{"k": k, "s": s, "n": n} for n, k in enumerate(ks) if k is not None]
              for s, ks in enumerate(keys)]
    doc = run_page(shards, route, args(sort="k", limit=limit, offset=offset), rng, native)
    everything = sorted((i for shard in shards for i in shard),
                        key=lambda i: (sort_key("k")(i), i["s"], i["n"]))
    assert doc["data"] == everything[offset: offset + limit]


# -- strict mode commits late; an empty page of failed shards is a 503 ----------------


def test_strict_mode_commits_only_once_every_shard_answered_2xx():
    """The usual failures (a 5xx, refused, no headers) come before the last
    shard's headers: holding the 200 until then makes them clean 502s."""
    sc = Scatter(["a", "b"], "data.item", JSONListEncoder(), strict=True)
    out = Shell(sc)
    out.response(0, 200)
    out.data(0, b'{"data":[{"i":1},{"i":2}')
    assert out.status is None and out.later == 0  # nothing to tick for: b's headers
    out.response(1, 500)
    out.turn()
    assert out.status is None and out.answer.status == 502
    error = json.loads(out.answer.body)["error"]
    assert [f["shard"] for f in error["meta"]["shards"]["failed"]] == ["b"]
    # Only what is true: a was let go of, not failed; no page, so no cursor or totals.
    assert error["meta"] == {"shards": {"total": 2, "succeeded": 0, "cancelled": ["a"],
                                        "failed": error["meta"]["shards"]["failed"]}}
    assert out.cancelled == [0]


def test_partial_mode_still_sends_the_first_item_before_the_others_answer():
    sc = Scatter(["a", "b"], "data.item", JSONListEncoder())
    out = Shell(sc)
    out.response(0, 200)
    out.data(0, b'{"data":[{"i":1},')
    assert out.status == 200 and out.body == b'{"data":[{"i":1}'


def test_strict_mode_holds_a_bounded_buffer_while_it_waits_for_the_last_headers():
    sc = Scatter(["a", "b"], "data.item", JSONListEncoder(), strict=True, strict_buffer=40)
    out = Shell(sc)
    out.response(0, 200)
    out.data(0, b'{"data":[{"i":1},{"i":2},')
    assert out.paused == set()
    out.data(0, b'{"i":3},{"i":4},{"i":5},{"i":6},{"i":7},')
    assert out.paused == {0} and out.status is None  # a waits; nothing is lost
    out.response(1, 200)
    assert out.status == 200 and out.paused == set()
    out.data(0, b'{"i":8}]}')
    out.end(0)
    out.data(1, b'{"data":[]}')
    out.end(1)
    assert [i["i"] for i in out.doc()["data"]] == list(range(1, 9))
    assert out.doc()["meta"]["complete"] is True


def test_strict_mode_names_a_shard_that_failed_before_its_headers_as_the_only_failure():
    sc = Scatter(["a", "b", "c"], "data.item", JSONListEncoder(), strict=True)
    out = Shell(sc)
    out.response(0, 200)
    out.data(0, b'{"data":[{"i":1}]}')
    out.end(0)
    out.response(1, 200)
    out.failed(2, ShardError("no_healthy_replica", "every replica is ejected"))
    out.turn()
    shards = json.loads(out.answer.body)["error"]["meta"]["shards"]
    assert shards["succeeded"] == 1 and shards["cancelled"] == ["b"]
    assert [f["shard"] for f in shards["failed"]] == ["c"]


def test_meta_says_complete_only_when_every_shard_succeeded():
    sc = Scatter(["a", "b"], "data.item", JSONListEncoder())
    out = Shell(sc)
    out.data(0, b'{"data":[{"i":1}]}')
    out.end(0)
    out.data(1, b'{"data":[{"i":2},')
    out.failed(1, ShardError("truncated", "the connection closed in the middle of the body"))
    meta = out.doc()["meta"]
    assert meta["complete"] is False and meta["shards"]["failed"][0]["items_delivered"] == 1


def test_a_page_with_no_items_because_only_failed_shards_have_more_is_a_503():
    """A chain would otherwise spin through empty pages (or the same empty
    page forever, for a shard that always fails at the same item)."""
    cursors = []

    def cursor(positions):
        cursors.append(dict(positions))
        return "C" + ",".join(f"{k}={v}" for k, v in sorted(positions.items()))

    sc = Scatter(["a", "b"], "data.item", JSONListEncoder(), limit=2, quota=2,
                 starts={"a": 5, "b": 3}, total="meta.total", cursor=cursor)
    out = Shell(sc)
    out.data(0, b'{"data":[],"meta":{"total":5}}')  # a has run out
    out.end(0)
    out.failed(1, ShardError("no_healthy_replica", "every replica is ejected"))
    assert out.status is None and out.answer.status == 503
    assert out.answer.retry_after == 1
    error = json.loads(out.answer.body)["error"]
    assert error["code"] == "shards_unavailable"
    assert error["cursor"] == "Ca=5,b=3"  # the page's own start: retry it
    assert [f["shard"] for f in error["meta"]["shards"]["failed"]] == ["b"]


def test_an_empty_page_with_a_healthy_shard_that_may_have_more_is_not_a_503():
    """a's page was all another shard's items (a tenant moving): the next
    page moves on, so an empty page here makes progress."""
    sc = Scatter(["a", "b"], "data.item", JSONListEncoder(), limit=2, quota=2,
                 cursor=lambda p: "C", foreign=lambda shard, item: True)
    out = Shell(sc)
    out.data(0, b'{"data":[{"i":1},{"i":2}]}')  # as many as asked for: it may have more
    out.end(0)
    out.failed(1, ShardError("connect_refused", "connection refused"))
    assert out.answer is None and out.status == 200
    assert out.doc()["meta"]["next_cursor"] == "C"


def test_a_page_with_items_and_a_failed_shard_is_a_200_as_before():
    sc = Scatter(["a", "b"], "data.item", JSONListEncoder(), cursor=lambda p: "C",
                 retry_after=7)
    out = Shell(sc)
    out.data(0, b'{"data":[{"i":1}]}')
    out.end(0)
    out.failed(1, ShardError("connect_refused", "connection refused"))
    assert out.answer is None and out.status == 200 and out.doc()["meta"]["complete"] is False


# -- items the native path passes but cannot read or rewrite (found against a live gateway) --

_NATIVE_ROUTE = config.parse({"shards": {"s1": {"urls": ["http://127.0.0.1:1"]}},
                              "routes": [{"path": "/x", "mode": "scatter", "items": "data.item",
                                          "sort": ["k"], "id_fields": ["id"]}]},
                             "<test>").routes[0]
_DEEP = b"[" * 400 + b"]" * 400  # within the parsers' 512 levels, past orjson's 254


def _native(query: dict[bytes, list[bytes]]) -> Shell:
    assert split.NATIVE, "the native splitter is not built"
    q = paging.parse(_NATIVE_ROUTE, query, SECRET)
    return Shell(scatter_for(_NATIVE_ROUTE, q, ["a", "b"], None, SECRET, native=True))


def _items(out: Shell) -> list:
    return out.doc()["data"]


def _failed(out: Shell) -> dict:
    return {f["shard"]: (f["error"], f["items_delivered"])
            for f in out.doc()["meta"]["shards"]["failed"]}


def test_a_sort_key_msgspec_refuses_is_read_another_way_and_nothing_stalls():
    """A lone surrogate escape elsewhere in the item, and an exponent beyond
    Decimal's in the key: msgspec refuses both; the item still sorts."""
    out = _native({b"sort": [b"k"]})
    out.data(0, b'{"data":[{"k":1},{"k":3,"note":"\\ud800"},{"k":1e99999999999999999999}]}')
    out.end(0)
    out.data(1, b'{"data":[{"k":2},{"k":4}]}')
    out.end(1)
    assert [i["k"] for i in _items(out)] == [1, 2, 3, 4, float("inf")]
    assert _failed(out) == {}


def test_a_sort_key_nothing_can_read_fails_that_shard_alone_after_its_earlier_items():
    """An item nested deeper than any decoder goes (here: than a lowered
    recursion limit lets msgspec and json go): the shard fails with
    unreadable_item; its earlier items and the other shard's all arrive (the
    merge used to stall with the bad item's predecessors outside its heap)."""
    import sys

    out = _native({b"sort": [b"k"]})
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(300)
    try:
        out.data(0, b'{"data":[{"k":1},{"k":3,"x":' + _DEEP + b'},{"k":5}]}')
    finally:
        sys.setrecursionlimit(limit)
    out.data(1, b'{"data":[{"k":2},{"k":4}]}')
    out.end(1)
    assert out.finished
    assert [i["k"] for i in _items(out)] == [1, 2, 4]
    assert _failed(out) == {"a": ("unreadable_item", 1)}
    assert 0 in out.cancelled


def test_an_id_rewrite_that_fails_blames_its_own_shard_and_keeps_the_items_before():
    """The rewrite (decode, new id, encode) of a deep item used to raise out of
    the drain: the shard whose event ran it was blamed, items were dropped
    silently. Now its own shard fails (unencodable_item, as ijson's path
    says), after the items before it; the other shard's all arrive."""
    for query in ({b"sort": [b"k"]}, {}):
        out = _native(query)
        out.data(0, b'{"data":[{"id":1,"k":1},{"id":2,"k":3,"x":' + _DEEP + b'}]}')
        out.end(0)
        out.data(1, b'{"data":[{"id":3,"k":2},{"id":4,"k":4}]}')
        out.end(1)
        assert out.finished, query
        assert sorted(i["k"] for i in _items(out)) == [1, 2, 4], query
        assert _failed(out) == {"a": ("unencodable_item", 1)}, query


def test_items_before_the_bad_bytes_of_the_only_shard_are_a_list_however_the_body_is_cut():
    """Sent at once, the good items and the malformed end came in one event,
    and the gateway answered 502 as if no item had been produced; sent in
    pieces it answered 200 with them. Now 200 with them either way."""
    bad = b'{"data":[1,2,{"a":"b"},]}'
    for native in (False, True):
        for cuts in ([len(bad)], [10, len(bad)], list(range(1, len(bad) + 1))):
            sc = Scatter(["a"], "data.item", JSONListEncoder(raw=native), native=native)
            out = Shell(sc)
            start = 0
            for cut in cuts:
                if sc.reading(0):
                    out.data(0, bad[start:cut])
                start = cut
            if sc.reading(0):
                out.end(0)
            out.turn()
            assert out.status == 200 and out.answer is None, (native, cuts)
            assert out.doc()["data"] == [1, 2, {"a": "b"}], (native, cuts)
            assert _failed_one(out) == ("malformed_json", 3), (native, cuts)


def _failed_one(out: Shell) -> tuple:
    (f,) = out.doc()["meta"]["shards"]["failed"]
    return f["error"], f["items_delivered"]


def test_an_owner_field_nothing_can_read_fails_that_shard_alone_after_its_earlier_items():
    import sys

    from shardstream.core.paths import DottedPath

    assert split.NATIVE, "the native splitter is not built"
    sc = Scatter(["a", "b"], "data.item", JSONListEncoder(raw=True), native=True,
                 owner_field=DottedPath.parse("t"), foreign=lambda shard, owner: owner == "other")
    out = Shell(sc)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(300)
    try:
        out.data(0, b'{"data":[{"t":"mine","i":1},{"t":"other","i":2},{"t":"mine","x":'
                 + _DEEP + b'},{"t":"mine","i":4}]}')
    finally:
        sys.setrecursionlimit(limit)
    out.data(1, b'{"data":[{"t":"mine","i":5}]}')
    out.end(1)
    out.turn()
    assert out.finished
    assert [i["i"] for i in _items(out)] == [1, 5]
    assert _failed(out) == {"a": ("unreadable_item", 1)}
