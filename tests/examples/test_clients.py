"""The partner clients of ``examples/`` (Python, Node, shell), each run as a
program against a running gateway with real loopback shards, on what it prints
and its exit code.

The gateway and the shards run in this process's reactor, so each client runs
in a thread (``deferToThread(subprocess.run, ...)``) while the reactor serves it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import tomli_w
from twisted.internet import defer, reactor, threads
from twisted.web import server
from twisted.web.resource import Resource

from shardstream.core import keys
from shardstream.web.site import TrackingSite
from support import GatewayTestCase, temp_dir

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples")

EVENTS = {"path": "/v3/events", "methods": ["GET"], "mode": "scatter", "items": "data.item",
          "sort": ["starts_at"], "max_limit": 100, "total": "meta.total", "id_fields": ["id"]}

REQUEST_ID = re.compile(r"request id [0-9A-Za-z._-]{8,}")


def events(shard: str, n: int, hour: int) -> list[dict[str, Any]]:
    """n items of one shard, one a day: the shards' items interleave when sorted."""
    return [{"id": i, "shard": shard, "starts_at": f"2027-01-{i:02d}T{hour:02d}:00Z",
             "price": {"amount": "12.50", "exact": 12.5}} for i in range(1, n + 1)]


def global_ids(*shards: tuple[str, int]) -> list[tuple[str, str]]:
    """(shard, global id) of every item of these shards."""
    return sorted((name, f"{name}~i{i}") for name, n in shards for i in range(1, n + 1))


def _node_skip() -> str | None:
    node = shutil.which("node")
    if node is None:
        return "node is not installed"
    try:
        version = subprocess.run([node, "--version"], check=False, capture_output=True, text=True,
                                 timeout=10).stdout.strip()
        major = int(version.lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.SubprocessError):
        return "node --version failed"
    return None if major >= 18 else f"node >= 18 is needed (this is {version})"


def _shell_skip() -> str | None:
    missing = [tool for tool in ("bash", "curl", "jq") if shutil.which(tool) is None]
    return f"{' and '.join(missing)} not installed" if missing else None


class Scripted(Resource):
    """A stand-in gateway for what the real one does not do on demand: each
    request gets the next answer of the script, written by hand."""

    isLeaf = True

    def __init__(self, script: list[Callable[[Any, bool], Any]]) -> None:
        super().__init__()
        self.script = list(script)
        self.uris: list[str] = []

    def render_GET(self, request: Any) -> Any:
        self.uris.append(request.uri.decode())
        ndjson = b"application/x-ndjson" in (request.getHeader(b"accept") or b"")
        request.setHeader(b"x-request-id", b"fake%d" % len(self.uris))
        request.setHeader(b"content-type",
                          b"application/x-ndjson" if ndjson else b"application/json")
        return self.script.pop(0)(request, ndjson)


def _body(items: list[dict[str, Any]], meta: dict[str, Any] | None, ndjson: bool) -> bytes:
    if ndjson:
        lines = [json.dumps(i) for i in items] + ([json.dumps({"meta": meta})] if meta else [])
        return "".join(line + "\n" for line in lines).encode()
    doc = '{"data":[' + ",".join(json.dumps(i) for i in items) + "]"
    return (doc + (',"meta":' + json.dumps(meta) if meta else "") + "}").encode()


def page(items: list[dict[str, Any]], cursor: str | None) -> Callable[[Any, bool], Any]:
    meta = {"shards": {"total": 1, "succeeded": 1, "failed": []}, "complete": True,
            "next_cursor": cursor}

    def answer(request: Any, ndjson: bool) -> Any:
        request.write(_body(items, meta, ndjson))  # chunked, then the last chunk
        request.finish()
        return server.NOT_DONE_YET

    return answer


def unavailable(cursor: str | None) -> Callable[[Any, bool], Any]:
    def answer(request: Any, ndjson: bool) -> bytes:
        request.setResponseCode(503)
        request.setHeader(b"retry-after", b"0")
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"error": {"code": "shards_unavailable", "message": "retry",
                                     "cursor": cursor, "meta": {"shards": {}}}}).encode()

    return answer


def closed_mid_body(items: list[dict[str, Any]]) -> Callable[[Any, bool], Any]:
    """Some items, then a clean close (FIN) without the terminating chunk."""

    def answer(request: Any, ndjson: bool) -> Any:
        request.write(_body(items, None, ndjson)[:None if ndjson else -2])  # no ]}
        reactor.callLater(0.05, request.channel.transport.loseConnection)
        return server.NOT_DONE_YET

    return answer


def ended_without_meta(items: list[dict[str, Any]]) -> Callable[[Any, bool], Any]:
    """A body that ends well (terminating chunk) but has no meta."""

    def answer(request: Any, ndjson: bool) -> Any:
        request.write(_body(items, None, ndjson))
        request.finish()
        return server.NOT_DONE_YET

    return answer


class Ran:
    """What a client program did: its exit code, its items, its stderr."""

    def __init__(self, done: subprocess.CompletedProcess[str]) -> None:
        self.code, self.stdout, self.stderr = done.returncode, done.stdout, done.stderr
        self.items = [json.loads(line) for line in done.stdout.splitlines()]

    def ids(self) -> list[tuple[str, str]]:
        return sorted((i["shard"], i["id"]) for i in self.items)

    def summary(self, name: str) -> str | None:
        found = re.findall(rf"^{name}: (.*)$", self.stderr, re.MULTILINE)
        return found[-1] if found else None

    def __repr__(self) -> str:  # shown when an assertion fails
        return f"exit {self.code}\n--- stdout:\n{self.stdout}--- stderr:\n{self.stderr}"


class _ClientScenarios:
    """The scenarios every client must pass; a subclass names the program."""

    command: ClassVar[list[str]] = []

    @defer.inlineCallbacks
    def client(self: Any, url: str, *args: str, env: dict[str, str] | None = None) -> Any:
        environ = {k: v for k, v in os.environ.items() if k != "SHARDSTREAM_KEY"}
        environ.update(env or {})
        done = yield threads.deferToThread(
            subprocess.run, [*self.command, url, *args], check=False, capture_output=True,
            text=True, timeout=60, env=environ, cwd=ROOT)
        return Ran(done)

    @defer.inlineCallbacks
    def test_cursors_to_the_end_every_item_once_and_the_failed_shard_named(self: Any) -> Any:
        self.shard("fast", events("fast", 5, 1))
        self.shard("slow", events("slow", 5, 2), delay=0.2, drip=0.01)
        self.shard("flaky", events("flaky", 6, 3), fail="cut", fail_first=1)
        base = self.gateway(routes=[EVENTS])
        ran = yield self.client(base + "/v3/events?sort=starts_at&limit=4")
        self.assertEqual(ran.code, 3, ran)  # a page was incomplete
        self.assertEqual(ran.ids(), global_ids(("fast", 5), ("slow", 5), ("flaky", 6)), ran)
        self.assertEqual(ran.items[0]["price"], {"amount": "12.50", "exact": 12.5})
        failures = re.findall(r"^failed shard (\S+): (\S+) \((.*)\)$", ran.stderr, re.MULTILINE)
        self.assertEqual([(shard, error) for shard, error, _ in failures],
                         [("flaky", "truncated")], ran)
        self.assertIn("page 1,", failures[0][2])  # the first page reported it
        self.assertRegex(failures[0][2], r"items_delivered=\d+")
        self.assertRegex(failures[0][2], REQUEST_ID)
        self.assertEqual(ran.summary("items"), "16", ran)
        self.assertEqual(ran.summary("complete"), "false", ran)
        self.assertGreaterEqual(int(ran.summary("pages") or 0), 4, ran)
        self.assertEqual(len(self.sims["flaky"].requests), int(ran.summary("pages") or 0))

    @defer.inlineCallbacks
    def test_a_whole_list_is_exit_0(self: Any) -> Any:
        self.shard("a", events("a", 4, 1))
        self.shard("b", events("b", 3, 2))
        base = self.gateway(routes=[EVENTS])
        ran = yield self.client(base + "/v3/events?sort=starts_at&limit=3")
        self.assertEqual(ran.code, 0, ran)
        self.assertEqual(ran.ids(), global_ids(("a", 4), ("b", 3)))
        self.assertEqual([i["starts_at"] for i in ran.items],
                         sorted(i["starts_at"] for i in ran.items))  # one sorted list
        self.assertEqual((ran.summary("pages"), ran.summary("items"), ran.summary("complete")),
                         ("3", "7", "true"), ran)
        self.assertNotIn("failed shard", ran.stderr)

    @defer.inlineCallbacks
    def strict_cut(self: Any, query: str) -> Any:
        self.shard("a", events("a", 10, 1))
        self.shard("f", events("f", 10, 2), delay=0.2, fail="cut")  # a's items are out first
        base = self.gateway(routes=[EVENTS])
        ran = yield self.client(base + "/v3/events?partial=false" + query)
        self.assertEqual(ran.code, 4, ran)  # truncated, never a short list
        self.assertRegex(ran.stderr, r"error: page 1 truncated after \d+ items")
        self.assertRegex(ran.stderr, REQUEST_ID)
        self.assertEqual(ran.summary("complete"), "false", ran)
        self.assertEqual(ran.summary("pages"), "0", ran)
        self.assertLess(len(ran.items), 20)
        return ran

    @defer.inlineCallbacks
    def test_strict_mode_cut_mid_body_interleaved_is_a_truncated_response(self: Any) -> Any:
        ran = yield self.strict_cut("")
        self.assertGreater(len(ran.items), 0, ran)  # the cut came after items went out

    @defer.inlineCallbacks
    def test_strict_mode_cut_mid_body_sorted_is_a_truncated_response(self: Any) -> Any:
        yield self.strict_cut("&sort=starts_at")

    @defer.inlineCallbacks
    def test_503_until_the_retries_run_out_is_exit_5(self: Any) -> Any:
        self.shard("empty", [])
        self.shard("dead", events("dead", 3, 1), fail="status")
        base = self.gateway(routes=[EVENTS])
        ran = yield self.client(base + "/v3/events?sort=starts_at&limit=5", "--max-retries", "0")
        self.assertEqual(ran.code, 5, ran)
        self.assertRegex(ran.stderr, r"error: page 1: 503 shards_unavailable still, after 0 "
                                     r"retries.*request id \S+")
        self.assertEqual(ran.items, [])

    @defer.inlineCallbacks
    def test_an_error_answer_is_exit_6(self: Any) -> Any:
        self.shard("a", events("a", 2, 1))
        base = self.gateway(routes=[EVENTS])
        ran = yield self.client(base + "/v3/events?sort=title")
        self.assertEqual(ran.code, 6, ran)
        self.assertRegex(ran.stderr, r"error: page 1: 400 bad_request: cannot sort by 'title'")

    def with_rate_limit(self: Any) -> tuple[str, str]:
        self.shard("a", events("a", 3, 1))
        self.shard("b", events("b", 3, 2))
        key_id, key = keys.new_key()
        path = os.path.join(temp_dir(self), "keys.toml")
        with open(path, "wb") as f:
            tomli_w.dump({"partners": {"acme": {"scopes": ["/v3/events"], "rate": 2, "burst": 1,
                                                "keys": [{"id": key_id,
                                                          "hash": keys.hash_key(key)}]}}}, f)
        return self.gateway(routes=[EVENTS], auth={"keys_file": path}), key

    def scripted(self: Any, *script: Callable[[Any, bool], Any]) -> tuple[str, Scripted]:
        fake = Scripted(list(script))
        site = TrackingSite(fake)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self._sites.append(site)
        return f"http://127.0.0.1:{port.getHost().port}", fake

    @defer.inlineCallbacks
    def test_a_503_on_a_cursor_page_retries_that_cursor(self: Any) -> Any:
        cursor = "c/1+="  # needs encoding in a query
        one = [{"id": "x~i1", "shard": "x"}, {"id": "x~i2", "shard": "x"}]
        two = [{"id": "y~i1", "shard": "y"}]
        base, fake = self.scripted(page(one, cursor), unavailable(cursor), page(two, None))
        ran = yield self.client(base + "/v3/events?sort=starts_at&limit=2")
        self.assertEqual(ran.code, 0, ran)
        self.assertEqual(ran.items, one + two)
        asked = [(urlsplit(u).path, parse_qs(urlsplit(u).query)) for u in fake.uris]
        self.assertEqual(asked, [("/v3/events", {"sort": ["starts_at"], "limit": ["2"]})]
                         + [("/v3/events", {"cursor": [cursor]})] * 2)
        self.assertIn("page 2: 503 shards_unavailable, retry 1 of 5 in 0 s (request id fake2)",
                      ran.stderr)

    @defer.inlineCallbacks
    def test_a_close_without_the_last_chunk_is_truncated(self: Any) -> Any:
        sent = [{"id": "x~i1", "shard": "x"}, {"id": "x~i2", "shard": "x"}]
        base, _ = self.scripted(closed_mid_body(sent))
        ran = yield self.client(base + "/v3/events")
        self.assertEqual(ran.code, 4, ran)
        self.assertRegex(ran.stderr, r"error: page 1 truncated after \d+ items: .*"
                                     r"\(request id fake1\)")
        self.assertLessEqual(len(ran.items), 2)
        self.assertEqual(ran.items, sent[:len(ran.items)])
        self.assertEqual(ran.summary("complete"), "false", ran)

    @defer.inlineCallbacks
    def test_a_body_that_ends_without_meta_is_truncated(self: Any) -> Any:
        sent = [{"id": "x~i1", "shard": "x"}, {"meta": "an item, not the meta"}]
        base, _ = self.scripted(ended_without_meta(sent))
        ran = yield self.client(base + "/v3/events")
        self.assertEqual(ran.code, 4, ran)
        self.assertRegex(ran.stderr, r"error: page 1 truncated after 2 items: .*meta")
        self.assertEqual(ran.items, sent)

    @defer.inlineCallbacks
    def test_items_are_printed_as_they_arrive(self: Any) -> Any:
        self.shard("fast", events("fast", 3, 1))
        self.shard("slow", events("slow", 3, 2), delay=0.4)
        base = self.gateway(routes=[EVENTS])
        times, ran = yield threads.deferToThread(self.timed, base + "/v3/events")
        self.assertEqual(ran.code, 0, ran)
        self.assertEqual([i["shard"] for i in ran.items], ["fast"] * 3 + ["slow"] * 3)
        self.assertGreater(times[3] - times[2], 0.25, times)  # the fast ones did not wait

    def timed(self: Any, url: str) -> tuple[list[float], Ran]:
        """Runs the client; when (monotonic) each stdout line arrived."""
        proc = subprocess.Popen([*self.command, url], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=ROOT)
        assert proc.stdout is not None and proc.stderr is not None
        lines, times = [], []
        for line in proc.stdout:
            times.append(time.monotonic())
            lines.append(line)
        stderr = proc.stderr.read()
        proc.wait(timeout=60)
        return times, Ran(subprocess.CompletedProcess(proc.args, proc.returncode,
                                                      "".join(lines), stderr))

    @defer.inlineCallbacks
    def test_without_the_key_is_401_exit_6(self: Any) -> Any:
        base, key = self.with_rate_limit()
        ran = yield self.client(base + "/v3/events?limit=3")
        self.assertEqual(ran.code, 6, ran)
        self.assertRegex(ran.stderr, r"error: page 1: 401 ")
        ran = yield self.client(base + "/v3/events?limit=10", env={"SHARDSTREAM_KEY": key})
        self.assertEqual(ran.code, 0, ran)
        self.assertEqual(len(ran.items), 6)


class PythonClientTests(_ClientScenarios, GatewayTestCase):
    """The scenarios, and those that wait out the gateway's own Retry-After
    (1 s): the other clients meet a 503 from the scripted gateway, with 0 s."""

    command: ClassVar[list[str]] = [sys.executable,
                                    os.path.join(EXAMPLES, "python", "shardstream_client.py")]

    @defer.inlineCallbacks
    def test_503_on_an_empty_page_of_failed_shards_is_retried(self) -> Any:
        self.shard("empty", [])
        self.shard("flaky", events("flaky", 3, 1), fail="status", fail_first=1)
        base = self.gateway(routes=[EVENTS])
        ran = yield self.client(base + "/v3/events?sort=starts_at&limit=5")
        self.assertEqual(ran.code, 0, ran)
        self.assertRegex(ran.stderr, r"page 1: 503 shards_unavailable, retry 1 of 5 in 1 s "
                                     r"\(request id \S+\)")
        self.assertEqual(ran.ids(), global_ids(("flaky", 3)))
        self.assertEqual(len(self.sims["flaky"].requests), 2)

    @defer.inlineCallbacks
    def test_429_is_retried_after_retry_after_and_the_list_completes(self) -> Any:
        base, key = self.with_rate_limit()
        ran = yield self.client(base + "/v3/events?sort=starts_at&limit=3", "--key", key)
        self.assertEqual(ran.code, 0, ran)
        self.assertEqual(ran.ids(), global_ids(("a", 3), ("b", 3)))
        self.assertRegex(ran.stderr, r"page 2: 429 rate_limited, retry 1 of 5 in 1 s")
        self.assertEqual(ran.summary("pages"), "2", ran)
        for sim in self.sims.values():  # the 429 reached no shard
            self.assertEqual(len(sim.requests), 2)
            self.assertNotIn("authorization", sim.requests[0]["headers"])



class NodeClientTests(_ClientScenarios, GatewayTestCase):
    command: ClassVar[list[str]] = ["node", os.path.join(EXAMPLES, "js", "shardstream-client.mjs")]
    skip = _node_skip()


class ShellClientTests(_ClientScenarios, GatewayTestCase):
    command: ClassVar[list[str]] = ["bash", os.path.join(EXAMPLES, "shell", "shardstream-list.sh")]
    skip = _shell_skip()


class PythonLibraryTests(GatewayTestCase):
    """The Python client as a library, in this process (its HTTP in a thread)."""

    def setUp(self) -> None:
        super().setUp()
        sys.path.insert(0, os.path.join(EXAMPLES, "python"))
        self.addCleanup(sys.path.remove, os.path.join(EXAMPLES, "python"))
        import shardstream_client

        self.lib = shardstream_client

    @defer.inlineCallbacks
    def test_items_pages_and_failed_shards(self) -> Any:
        self.shard("fast", events("fast", 4, 1))
        self.shard("flaky", events("flaky", 4, 2), fail="cut", fail_first=1)
        base = self.gateway(routes=[EVENTS])
        pages: list[Any] = []
        client = self.lib.Client(base, on_page=pages.append)

        def read() -> list[Any]:
            return list(client.iter_items("/v3/events", {"sort": "starts_at", "limit": 3}))

        got = yield threads.deferToThread(read)
        self.assertEqual(sorted((i["shard"], i["id"]) for i in got),
                         global_ids(("fast", 4), ("flaky", 4)))
        self.assertEqual(got[0]["price"]["exact"], self.lib.Decimal("12.5"))
        self.assertEqual(self.lib.dumps(got[0]["price"]), '{"amount":"12.50","exact":12.5}')
        self.assertEqual([p.number for p in pages], list(range(1, len(pages) + 1)))
        self.assertEqual([(f["shard"], f["page"]) for f in client.failed], [("flaky", 1)])
        self.assertFalse(client.complete)
        self.assertEqual(len(client.request_ids), len(pages))

    @defer.inlineCallbacks
    def test_a_cut_is_truncated_response_not_a_short_list(self) -> Any:
        self.shard("a", events("a", 10, 1))
        self.shard("f", events("f", 10, 2), delay=0.2, fail="cut")
        base = self.gateway(routes=[EVENTS])
        client = self.lib.Client(base)
        got: list[Any] = []

        def read() -> None:
            for item in client.iter_items("/v3/events?partial=false"):
                got.append(item)

        with self.assertRaises(self.lib.TruncatedResponse) as caught:
            yield threads.deferToThread(read)
        self.assertEqual(caught.exception.items, len(got))
        self.assertIsNotNone(caught.exception.request_id)
        self.assertEqual(client.pages, [])
