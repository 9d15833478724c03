"""ShardCall deadlines and pausing, driven by a fake clock; the connection pool's
guarantees for writes, over real loopback connections."""

from __future__ import annotations

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial import unittest
from twisted.web.http_headers import Headers

from shardstream.core.config import UpstreamConfig
from shardstream.upstream.client import ShardCall, UpstreamClient


class FakeTransport:
    def __init__(self):
        self.paused = False
        self.stopped = False

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False

    def stopProducing(self):
        self.stopped = True


class FakeResponse:
    code, phrase, length = 200, b"OK", None

    def __init__(self, buffered=b""):
        self.transport = FakeTransport()
        self.buffered = buffered
        self.protocol = None

    def deliverBody(self, protocol):
        self.protocol = protocol
        protocol.makeConnection(self.transport)
        if self.buffered:  # Twisted hands over what it already has, paused or not
            protocol.dataReceived(self.buffered)


class Sink:
    def __init__(self):
        self.events = []

    def response(self, response):
        self.events.append("response")
        return True

    def data(self, data):
        self.events.append(("data", data))
        return True

    def end(self):
        self.events.append("end")

    def failed(self, error):
        self.events.append(("failed", error.code))


class ShardCallTests(unittest.TestCase):
    def test_chunks_of_one_turn_reach_the_sink_as_one_piece_before_the_end(self):
        from twisted.web.client import ResponseDone
        from twisted.python.failure import Failure

        response = FakeResponse()
        self.call._on_response(response)
        for part in (b"a", b"b", b"c"):
            response.protocol.dataReceived(part)
        self.assertEqual(self.sink.events, ["response"])
        response.protocol.connectionLost(Failure(ResponseDone()))
        self.assertEqual(self.sink.events, ["response", ("data", b"abc"), "end"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def setUp(self):
        self.clock = Clock()
        client = UpstreamClient(self.clock, UpstreamConfig(idle_timeout=1.0, total_timeout=100))
        self.sink = Sink()
        self.call = ShardCall(client, self.sink)
        self.call._arm_first_byte()

    def test_idle_deadline_counts_only_the_shards_time(self):
        response = FakeResponse()
        self.call._on_response(response)
        self.clock.advance(0.6)  # the shard is silent for 0.6 s ...
        for _ in range(20):  # ... then the client keeps pausing and resuming
            self.call.pause()
            self.clock.advance(0.5)
            self.call.resume()
            self.clock.advance(0.01)
        # 0.6 + 20 * 0.01 s of the shard's own silence: not yet 1 s
        self.assertEqual(self.sink.events, ["response"])
        self.clock.advance(0.25)
        self.assertEqual(self.sink.events, ["response", ("failed", "idle_timeout")])
        self.assertTrue(response.transport.stopped)

    def test_data_restarts_the_idle_deadline(self):
        response = FakeResponse()
        self.call._on_response(response)
        for _ in range(5):
            self.clock.advance(0.9)
            response.protocol.dataReceived(b"x")
            self.clock.advance(0)  # handed over at the end of the reactor turn
        self.assertNotIn(("failed", "idle_timeout"), self.sink.events)
        self.clock.advance(1.0)
        self.assertEqual(self.sink.events[-1], ("failed", "idle_timeout"))

    def test_one_timer_watches_every_deadline_and_data_never_adds_one(self):
        """Four deadlines used to be up to three DelayedCalls per request,
        and every piece of body data reset one: now one timer, set for the
        earliest deadline, and data only moves a moment."""
        self.call._arm("total_timeout", 100, "the shard did not finish within 100 s")
        response = FakeResponse()
        self.call._on_response(response)
        timer = self.call._timer
        deadlines = [c for c in self.clock.getDelayedCalls() if c.func == self.call._due]
        self.assertEqual(deadlines, [timer])
        for _ in range(50):
            self.clock.advance(0.5)
            response.protocol.dataReceived(b"x")
            self.clock.advance(0)
            self.assertEqual([c for c in self.clock.getDelayedCalls()
                              if c.func == self.call._due], [self.call._timer])
        self.assertNotIn(("failed", "idle_timeout"), self.sink.events)
        self.clock.advance(1.0)
        self.assertEqual(self.sink.events[-1], ("failed", "idle_timeout"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_sooner_deadline_replaces_the_timer_instead_of_moving_it(self):
        """DelayedCall.reset to an earlier moment searches the reactor's whole
        heap of calls (list.index): under load every request's timer is in
        it, and that search was a third of a small list request's CPU. A
        sooner deadline cancels the call (counted, swept in bulk) and makes
        a new one; a later one leaves the timer where it is."""
        self.call._stop_timers()
        self.call._arm("total_timeout", 100, "the shard did not finish within 100 s")
        first = self.call._timer
        self.call._arm("first_byte_timeout", 5, "no response headers within 5 s")
        self.assertTrue(first.cancelled)
        self.assertIsNot(self.call._timer, first)
        self.assertAlmostEqual(self.call._timer.getTime(), self.clock.seconds() + 5)
        second = self.call._timer
        self.call._arm("idle_timeout", 50, "no body data for 50 s")
        self.assertIs(self.call._timer, second)
        self.assertEqual([c for c in self.clock.getDelayedCalls() if c.func == self.call._due],
                         [second])
        self.clock.advance(5)
        self.assertEqual(self.sink.events[-1], ("failed", "first_byte_timeout"))

    def test_a_response_that_arrives_while_paused_hands_over_nothing_until_resumed(self):
        self.call.pause()
        response = FakeResponse(buffered=b"early bytes")
        self.call._on_response(response)
        self.assertEqual(self.sink.events, ["response"])  # no data behind the consumer's back
        self.call.resume()
        self.clock.advance(0)
        self.assertEqual(self.sink.events, ["response", ("data", b"early bytes")])

    def test_cancel_while_holding_a_response_drops_its_body(self):
        self.call.pause()
        response = FakeResponse()
        self.call._on_response(response)
        self.call.cancel()
        self.assertTrue(response.transport.stopped)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_an_exception_in_the_sink_fails_the_shard_instead_of_escaping(self):
        def boom(data):
            raise RuntimeError("bug")

        self.sink.data = boom
        response = FakeResponse()
        self.call._on_response(response)
        response.protocol.dataReceived(b"x")  # must not raise into Twisted's parser
        self.clock.advance(0)
        self.assertEqual(self.sink.events[-1], ("failed", "internal_error"))
        self.assertTrue(response.transport.stopped)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class _Recorder:
    """A sink that drops responses with status >= 500 at their headers."""

    def __init__(self, on_drop=None):
        self.result = Deferred()
        self.on_drop = on_drop

    def response(self, response):
        self.code = response.code
        if response.code >= 500:
            if self.on_drop:
                self.on_drop()
            reactor.callLater(0, self.result.callback, ("dropped", response.code))
            return False
        return True

    def data(self, data):
        return True

    def end(self):
        self.result.callback(("end", self.code))

    def failed(self, error):
        self.result.callback(("failed", error.code))


class _KeepAliveShard(Protocol):
    """Answers on a keep-alive connection: GET /503 with a 503 and a body in
    one segment; the second request on a connection is read, recorded, and the
    connection reset without an answer (a shard closing an idle connection
    just as the gateway reuses it)."""

    def connectionMade(self):
        self.buffer = b""
        self.count = 0

    def dataReceived(self, data):
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            method, path = head.split(b" ")[:2]
            self.factory.seen.append((method, path))
            self.count += 1
            if self.count > 1:
                self.transport.abortConnection()
                return
            status, body = (b"503 Busy", b"x" * 3000) if path == b"/503" else (b"200 OK", b"{}")
            self.transport.write(b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n%s"
                                 % (status, len(body), body))


class PoolTests(unittest.TestCase):
    """What Twisted's pool must not do to a write (real loopback connections).
    Writes always go through it; here the GETs do too (upstream.client)."""

    scheme = b"http"
    client_kind = "twisted"

    def listen(self, factory):
        return reactor.listenTCP(0, factory, interface="127.0.0.1")

    def setUp(self):
        factory = Factory.forProtocol(_KeepAliveShard)
        factory.seen = []
        self.seen = factory.seen
        port = self.listen(factory)
        self.addCleanup(port.stopListening)
        self.base = b"%s://127.0.0.1:%d" % (self.scheme, port.getHost().port)
        self.client = UpstreamClient(reactor, UpstreamConfig(first_byte_timeout=2.0,
                                                             client=self.client_kind))
        self.addCleanup(self.client.close)

    def pooled(self):
        """The idle connections a request starting now could reuse."""
        if self.client.lean is not None:
            return [c for o in self.client.lean._origins.values() for c in o.idle]
        return [c for conns in self.client.pool._connections.values() for c in conns]

    def call(self, method, path, on_drop=None):
        sink = _Recorder(on_drop)
        self.client.call(method, self.base + path, Headers(), None, sink)
        return sink.result

    @inlineCallbacks
    def test_a_dropped_response_does_not_put_its_closing_connection_in_the_pool(self):
        pooled = []

        def look():  # the next turn: what a request starting now would reuse
            pooled.extend(self.pooled())

        result = yield self.call(b"GET", b"/503", on_drop=lambda: reactor.callLater(0, look))
        self.assertEqual(result, ("dropped", 503))
        self.assertEqual(pooled, [])

    @inlineCallbacks
    def test_a_write_on_a_connection_the_shard_closed_is_not_resent(self):
        self.assertEqual((yield self.call(b"GET", b"/ok")), ("end", 200))  # pooled now
        result = yield self.call(b"DELETE", b"/item/1")
        self.assertEqual(result, ("failed", "no_response"))
        self.assertEqual(self.seen.count((b"DELETE", b"/item/1")), 1)
        # A read is still resent on a fresh connection (idle connections do get closed).
        self.assertEqual((yield self.call(b"GET", b"/ok")), ("end", 200))
        result = yield self.call(b"GET", b"/ok")
        self.assertEqual(result, ("end", 200))


class LeanPoolTests(PoolTests):
    """The lean client's pool (the GETs'): the same promises, and a write
    never meets a connection a GET left idle (the pools are apart)."""

    client_kind = "lean"

    @inlineCallbacks
    def test_a_write_on_a_connection_the_shard_closed_is_not_resent(self):
        # A DELETE goes through Twisted's pool: pool a connection there first.
        self.assertEqual((yield self.call(b"DELETE", b"/ok")), ("end", 200))
        result = yield self.call(b"DELETE", b"/item/1")
        self.assertEqual(result, ("failed", "no_response"))
        self.assertEqual(self.seen.count((b"DELETE", b"/item/1")), 1)

    @inlineCallbacks
    def test_a_get_on_a_pooled_connection_the_shard_closed_is_sent_once_more(self):
        self.assertEqual((yield self.call(b"GET", b"/ok")), ("end", 200))
        self.assertEqual(len(self.pooled()), 1)
        self.assertEqual((yield self.call(b"GET", b"/again")), ("end", 200))
        # Once on the pooled connection (reset unanswered), once on a new one.
        self.assertEqual(self.seen.count((b"GET", b"/again")), 2)
        self.assertEqual((yield self.call(b"DELETE", b"/ok")), ("end", 200))
        self.assertEqual(self.seen.count((b"DELETE", b"/ok")), 1)  # never on the GETs' pool


class TLSPoolTests(PoolTests):
    """The same over TLS, where the pooled connection's transport is a TLS
    layer over the TCP one that is closing."""

    scheme = b"https"

    def listen(self, factory):
        import os

        from twisted.internet import ssl

        from support import self_signed, temp_dir

        cert_path, key_path = self_signed(temp_dir(self))
        old = os.environ.get("SSL_CERT_FILE")  # trust it, for this test only
        os.environ["SSL_CERT_FILE"] = cert_path
        self.addCleanup(lambda: os.environ.__setitem__("SSL_CERT_FILE", old) if old
                        else os.environ.pop("SSL_CERT_FILE", None))
        with open(key_path) as k, open(cert_path) as c:
            cert = ssl.PrivateCertificate.loadPEM(k.read() + c.read())
        return reactor.listenSSL(0, factory, cert.options(), interface="127.0.0.1")


class BadRequestTests(unittest.TestCase):
    @inlineCallbacks
    def test_a_url_the_client_refuses_fails_the_call_later_and_leaves_no_timer(self):
        client = UpstreamClient(reactor, UpstreamConfig())
        self.addCleanup(client.close)
        sink = _Recorder()
        call = client.call(b"GET", b"http://127.0.0.1:1/x?q=\x7f", Headers(), None, sink)
        self.assertFalse(hasattr(sink, "code"))  # nothing reported inside call()
        self.assertEqual((yield sink.result), ("failed", "internal_error"))
        self.assertEqual((call._timer, call._deadlines), (None, {}))  # trial also fails on a pending DelayedCall


class LeanTLSPoolTests(LeanPoolTests):
    scheme = b"https"
    listen = TLSPoolTests.listen


class LoggedRequestIdTests(unittest.TestCase):
    """A shard call's log lines name the client request it was made for."""

    @inlineCallbacks
    def test_an_internal_error_in_a_shard_call_names_the_request_id(self):
        from twisted.logger import globalLogPublisher

        factory = Factory.forProtocol(_KeepAliveShard)
        factory.seen = []
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        events: list = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        for kind in ("lean", "twisted"):
            client = UpstreamClient(reactor, UpstreamConfig(client=kind))
            self.addCleanup(client.close)
            sink = _Recorder()

            def boom(data):
                raise RuntimeError("bug")

            sink.data = boom
            client.call(b"GET", b"http://127.0.0.1:%d/ok" % port.getHost().port,
                        Headers({b"x-request-id": [b"rid-" + kind.encode()]}), None, sink)
            self.assertEqual((yield sink.result), ("failed", "internal_error"))
            failures = [e for e in events if "log_failure" in e
                        and e.get("request_id") == b"rid-" + kind.encode()]
            self.assertEqual(len(failures), 1, kind)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)


class _Hanging:
    """An agent whose requests are never answered."""

    def request(self, method, uri, headers=None, body=None):
        return Deferred()


class DeadlineMomentTests(unittest.TestCase):
    def test_calls_started_in_one_turn_time_out_together_however_long_each_start_took(self):
        """A list request starts its shard calls one after another, each sending
        at once; a slow send used to put a later shard's deadline in the next
        reactor turn, and strict mode named only the first shard of a common
        timeout. Calls started in one reactor turn share one moment (the first
        one's); a call of a later turn gets its own."""
        clock = Clock()
        client = UpstreamClient(clock, UpstreamConfig(first_byte_timeout=0.3, total_timeout=5))
        client.agent = _Hanging()
        sinks = [Sink() for _ in range(3)]

        def start(sink: Sink) -> None:
            ShardCall(client, sink).start(b"GET", b"http://127.0.0.1:1/x", Headers(), None)

        start(sinks[0])
        clock.rightNow += 0.05  # a slow send, in the same turn: no timer runs
        start(sinks[1])
        clock.advance(0)  # the next turn
        clock.rightNow += 0.001
        start(sinks[2])
        clock.advance(0.3 - 0.051)  # the first call's deadline
        self.assertEqual([s.events for s in sinks],
                         [[("failed", "first_byte_timeout")]] * 2 + [[]])
        clock.advance(0.051)
        self.assertEqual(sinks[2].events, [("failed", "first_byte_timeout")])


def _lean_against_a_json_shard(case: unittest.TestCase, body: bytes) -> tuple[UpstreamClient, bytes]:
    """A lean client and the URL of a real shard on loopback that answers ``body``."""
    from twisted.web import resource, server

    class Body(resource.Resource):
        isLeaf = True

        def render_GET(self, request):
            return body

    port = reactor.listenTCP(0, server.Site(Body()), interface="127.0.0.1")
    case.addCleanup(port.stopListening)
    client = UpstreamClient(reactor, UpstreamConfig(first_byte_timeout=1.0, client="lean"))
    case.addCleanup(client.close)
    return client, b"http://127.0.0.1:%d/x" % port.getHost().port


class LeanReuseTests(unittest.TestCase):
    """A pooled connection serves the next GET whatever the last one's sink did."""

    @inlineCallbacks
    def test_a_pause_asked_as_the_body_ends_does_not_pause_the_next_exchange(self):
        client, url = _lean_against_a_json_shard(self, b'{"data": [1, 2, 3]}')
        for n in range(3):
            sink = _Recorder()
            calls = []

            def data(chunk, calls=calls):  # a sorted merge whose queue is full: pause
                calls[0].pause()
                return True

            sink.data = data
            calls.append(client.call(b"GET", url, Headers(), None, sink))
            self.assertEqual((yield sink.result), ("end", 200), n)
        pooled = [c for o in client.lean._origins.values() for c in o.idle]
        self.assertEqual([c.paused for c in pooled], [False])  # one connection, reused


class LeanWriteNowTests(unittest.TestCase):
    @inlineCallbacks
    def test_a_request_on_a_pooled_connection_is_sent_before_the_reactor_turns(self):
        """Twisted queues a write until the poller says writable: a turn later,
        after every other event of this one. The lean client hands a request
        to the kernel at once, and registers nothing with the poller."""
        client, url = _lean_against_a_json_shard(self, b'{"data": [1]}')
        sink = _Recorder()
        client.call(b"GET", url, Headers(), None, sink)
        self.assertEqual((yield sink.result), ("end", 200))
        (conn,) = [c for o in client.lean._origins.values() for c in o.idle]
        transport = conn.transport
        sink = _Recorder()
        client.call(b"GET", url, Headers(), None, sink)  # no reactor turn in between
        self.assertIs(conn.exchange.conn, conn)  # this very connection took it
        self.assertEqual(transport._tempDataBuffer, [])
        self.assertEqual(transport.dataBuffer[transport.offset:], b"")
        self.assertNotIn(transport, reactor.getWriters())
        self.assertEqual((yield sink.result), ("end", 200))

    def test_other_transports_write_as_before(self):
        from twisted.internet.testing import StringTransport

        from shardstream.upstream.lean import write_now

        transport = StringTransport()
        write_now(transport, b"GET / HTTP/1.1\r\n\r\n")
        self.assertEqual(transport.value(), b"GET / HTTP/1.1\r\n\r\n")


class _ThenGarbage(Protocol):
    """A complete response, then bytes no request asked for, in one segment."""

    def dataReceived(self, data):
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}NOT HTTP AT ALL")


class LeanHeldResponseTests(unittest.TestCase):
    @inlineCallbacks
    def test_a_held_response_still_ends_when_its_connection_was_dropped_meanwhile(self):
        """A paused call holds the response; garbage after it drops the
        connection before the body is taken: the body must still end, and
        at once, not at the idle deadline."""
        port = reactor.listenTCP(0, Factory.forProtocol(_ThenGarbage), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = UpstreamClient(reactor, UpstreamConfig(idle_timeout=5.0, client="lean"))
        self.addCleanup(client.close)
        sink = _Recorder()
        call = client.call(b"GET", b"http://127.0.0.1:%d/x" % port.getHost().port, Headers(),
                           None, sink)
        call.pause()  # before the response: it is held, its body not taken
        yield task.deferLater(reactor, 0.2, lambda: None)  # all of it in, garbage too
        started = reactor.seconds()
        call.resume()
        self.assertEqual((yield sink.result), ("end", 200))
        self.assertLess(reactor.seconds() - started, 1.0)


class UpstreamHeadersTests(unittest.TestCase):
    def test_a_shard_requests_copy_takes_the_values_as_they_were_set(self):
        """One copy per shard of a list request: Headers.copy would fold line
        breaks in every value again, though setRawHeaders already did."""
        from unittest import mock

        from twisted.web import http_headers

        from shardstream.web.headers import _Set

        original = _Set()
        original.setRawHeaders(b"x-request-id", [b"abc"])
        original.setRawHeaders(b"accept", [b"application/json", b"text/plain"])
        with mock.patch.object(http_headers, "_sanitizeLinearWhitespace",
                               side_effect=AssertionError("set again")):
            copy = original.copy()
        self.assertEqual(list(copy.getAllRawHeaders()), list(original.getAllRawHeaders()))
        copy.addRawHeader(b"accept", b"text/csv")
        copy.setRawHeaders(b"traceparent", [b"00-1-2-01"])
        self.assertEqual(original.getRawHeaders(b"accept"), [b"application/json", b"text/plain"])
        self.assertIsNone(original.getRawHeaders(b"traceparent"))
