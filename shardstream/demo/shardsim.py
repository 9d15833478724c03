"""A simulated shard: the inventory REST API of one shard, over real HTTP.

Used by the demo (``twistd shardstream`` with no config) and by the tests,
which turn on its faults to produce each failure for real: a 5xx, a hang
before the headers or mid-body, a body cut mid-way, malformed JSON, a
connection closed without a response. It records what it was asked and
which responses lost their client, so tests can see the gateway's side.

API (``collection`` defaults to ``/v3/events``)::

    GET    /healthz
    GET    {collection}[?vendor_id=&sort=[-]key&limit=&offset=]   list, streamed,
                                                   {"data":[...],"meta":{"total":N}}
    POST   {collection}                            create (201); the body needs vendor_id
    GET    {collection}/{id}                       one item
    PUT|PATCH|DELETE {collection}/{id}
    GET    /v3/vendors/{vendor_id}                 the vendor, if it lives here
    GET    /v3/vendors/{vendor_id}/events          list of that vendor
    POST   /v3/vendors/{vendor_id}/events          create (201)
    *      /echo[/...]                             echoes method, headers, body

Sorting uses the gateway's documented order (numbers numerically, strings by
code point, null and missing last) and is stable, so ties keep the shard's
own order. ``ignore_sort=True`` makes a shard that answers unsorted,
``ignore_limit=True`` one that sends its whole list whatever the limit.
``fail_first=N`` makes the fault strike only the first N requests (a shard
that recovers). A list request may ask for a fault itself, as the demo's
tour does: ``?demo_fail=NAME`` makes the shard NAME cut its body after half
of its items, ``?demo_fail=NAME:FAULT`` picks another fault of ``FAULTS``.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.web import server
from twisted.web.resource import Resource
from zope.interface import implementer

FAULTS = (None, "status", "hang", "hang_body", "cut", "garbage", "close")


class ShardSim(Resource):
    isLeaf = True

    def __init__(
        self,
        name: str,
        items: list[dict[str, Any]] | None = None,
        *,
        delay: float = 0.0,
        drip: float = 0.0,
        fail: str | None = None,
        fail_status: int = 500,
        fail_first: int | None = None,
        batch: int = 100,
        collection: str = "/v3/events",
        vendors: dict[str, dict[str, Any]] | None = None,
        ignore_sort: bool = False,
        ignore_limit: bool = False,
        reactor: Any = None,
    ) -> None:
        super().__init__()
        if fail not in FAULTS:
            raise ValueError(f"fail must be one of {FAULTS}")
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.name = name
        self.items = list(items or [])
        self.delay, self.drip, self.batch = delay, drip, batch
        self.fail, self.fail_status = fail, fail_status
        self.fail_first = fail_first  # faults left to strike (None: every request)
        self.collection = collection
        self.vendors = dict(vendors or {})
        self.ignore_sort = ignore_sort
        self.ignore_limit = ignore_limit
        self.requests: list[dict[str, Any]] = []
        self.lost = 0  # responses whose client went away before the end
        self.completed = 0  # list responses written to the end
        self.bytes_sent = 0  # list body bytes handed to the transport

    # -- dispatch ---------------------------------------------------------------

    def render(self, request: Any) -> Any:
        body = request.content.read() if request.content is not None else b""
        self.requests.append(
            {
                "method": request.method.decode(),
                "uri": request.uri.decode(),
                "headers": {
                    k.decode().lower(): [v.decode() for v in vs]
                    for k, vs in request.requestHeaders.getAllRawHeaders()
                },
                "body": body,
            }
        )
        request.setHeader(b"x-shard", self.name.encode())
        method = request.method
        parts = request.path.decode().strip("/").split("/")
        coll = self.collection.strip("/").split("/")
        try:
            args = {k.decode(): v[0].decode() for k, v in request.args.items()}
        except UnicodeDecodeError:
            return self._json(request, 400, {"error": {"code": "bad_query",
                                                       "message": "the query is not UTF-8"}})
        if parts == ["healthz"]:
            return self._json(request, 200, {"status": "ok", "shard": self.name})
        fault = self._fault(args)
        if fault in ("status", "hang", "close"):  # these strike every path
            _ListWriter(self, request, [], 0, fault).start()
            return server.NOT_DONE_YET
        if parts[0] == "echo":
            echoed = self.requests[-1] | {"body": body.decode("latin-1"), "length": len(body)}
            return self._json(request, 200, echoed)
        if parts == coll and method == b"GET":
            return self._list(request, self._filter(args.get("vendor_id")), args, fault)
        if parts == coll and method == b"POST":
            try:
                vendor = json.loads(body)["vendor_id"]
            except (ValueError, KeyError, TypeError):
                return self._json(request, 400, {"error": {"code": "bad_body",
                                                           "message": "vendor_id is required"}})
            return self._create(request, vendor, body)
        if len(parts) == 3 and parts[:2] == ["v3", "vendors"] and method in (b"GET", b"HEAD"):
            vendor = self.vendors.get(parts[2])
            if vendor is None:
                return self._json(request, 404, {"error": {"code": "not_found",
                                                           "message": "no such vendor"}})
            return self._json(request, 200, {"data": vendor})
        if len(parts) == len(coll) + 1 and parts[:-1] == coll:
            return self._one(request, parts[-1], body)
        if len(parts) == 4 and parts[:2] == ["v3", "vendors"] and parts[3] == "events":
            if method == b"GET":
                return self._list(request, self._filter(parts[2]), args, fault)
            if method == b"POST":
                return self._create(request, parts[2], body)
            return self._json(request, 405, {"error": "method not allowed"})
        return self._json(request, 404, {"error": {"code": "not_found", "message": "no such path"}})

    def _fault(self, args: dict[str, str]) -> str | None:
        """The fault this request meets: the configured one, or one it asks for."""
        asked = args.get("demo_fail")
        if asked is not None:
            name, _, kind = asked.partition(":")
            return (kind or "cut") if name == self.name and (kind or "cut") in FAULTS else None
        if self.fail is None or self.fail_first is None:
            return self.fail
        if self.fail_first <= 0:
            return None
        self.fail_first -= 1
        return self.fail

    def _filter(self, vendor: str | None) -> list[dict[str, Any]]:
        """``vendor_id=v1`` or ``vendor_id=v1,v2``: those vendors' items."""
        if vendor is None:
            return self.items
        wanted = set(vendor.split(","))
        return [i for i in self.items if str(i.get("vendor_id")) in wanted]

    def _json(self, request: Any, status: int, value: Any) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(value).encode()

    def _find(self, item_id: str) -> int | None:
        for n, item in enumerate(self.items):
            if str(item.get("id")) == item_id:
                return n
        return None

    def _one(self, request: Any, item_id: str, body: bytes) -> bytes:
        n = self._find(item_id)
        if n is None:
            return self._json(request, 404, {"error": {"code": "not_found", "message": f"no item {item_id}"}})
        if request.method == b"GET":
            return self._json(request, 200, {"data": self.items[n]})
        if request.method == b"DELETE":
            del self.items[n]
            request.setResponseCode(204)
            return b""
        if request.method in (b"PUT", b"PATCH"):
            try:
                change = json.loads(body or b"{}")
                assert isinstance(change, dict)
            except (ValueError, AssertionError):
                return self._json(request, 400, {"error": {
                    "code": "bad_json", "message": "body must be a JSON object"}})
            item = change if request.method == b"PUT" else self.items[n] | change
            item["id"] = self.items[n]["id"]
            self.items[n] = item
            return self._json(request, 200, {"data": item})
        return self._json(request, 405, {"error": "method not allowed"})

    def _create(self, request: Any, vendor: str, body: bytes) -> bytes:
        try:
            item = json.loads(body)
            assert isinstance(item, dict)
        except (ValueError, AssertionError):
            return self._json(request, 400, {"error": {"code": "bad_json", "message": "body must be a JSON object"}})
        item["id"] = max((int(i["id"]) for i in self.items), default=0) + 1
        item["vendor_id"] = vendor
        self.items.append(item)
        return self._json(request, 201, {"data": item})

    def _list(self, request: Any, items: list[dict[str, Any]], args: dict[str, str],
              fault: str | None) -> Any:
        if "sort" in args and not self.ignore_sort:
            from ..core.merge import sort_key  # the order the gateway documents and expects

            sort = args["sort"]
            try:
                key = sort_key(sort.lstrip("-"), sort.startswith("-"))
            except ValueError as e:
                return self._json(request, 400, {"error": {"code": "bad_query",
                                                           "message": f"sort: {e}"}})
            items = sorted(items, key=key)
        bounds = {}
        for name in ("offset", "limit"):
            if name in args:
                value = args[name]
                if not (value.isascii() and value.isdigit()):
                    return self._json(request, 400, {"error": {
                        "code": "bad_query", "message": f"{name} must be a whole number"}})
                bounds[name] = int(value)
        total = len(items)
        items = items[bounds.get("offset", 0):]
        if "limit" in bounds and not self.ignore_limit:
            items = items[: bounds["limit"]]
        _ListWriter(self, request, items, total, fault).start()
        return server.NOT_DONE_YET


@implementer(IPushProducer)
class _ListWriter:
    """Streams ``{"data":[...],"meta":{"total":N}}`` with the shard's latency and fault."""

    def __init__(self, sim: ShardSim, request: Any, items: list[Any], total: int,
                 fault: str | None) -> None:
        self.sim, self.request, self.total, self.fault = sim, request, total, fault
        self.items = items  # encoded as they are sent: a long list starts at once
        self.pos = 0
        self.paused = False
        self.done = False
        self.timer: Any = None
        # Faults that strike mid-body do so after half of the items.
        self.break_at = max(1, len(items) // 2) if fault in ("hang_body", "cut", "garbage") else None

    def start(self) -> None:
        self.request.notifyFinish().addBoth(self._finished)
        self.timer = self.sim.reactor.callLater(self.sim.delay, self._begin)

    def _finished(self, result: Any) -> None:
        if not self.done:
            self.done = True
            self.sim.lost += 1
            if self.timer is not None and self.timer.active():
                self.timer.cancel()

    def _write(self, data: bytes) -> None:
        self.sim.bytes_sent += len(data)
        self.request.write(data)

    def _begin(self) -> None:
        self.timer = None
        sim, request = self.sim, self.request
        if self.fault == "hang":
            return
        if self.fault == "close":
            self.done = True
            request.channel.transport.abortConnection()
            return
        if self.fault == "status":
            self.done = True
            request.setResponseCode(sim.fail_status)
            request.setHeader(b"content-type", b"application/json")
            request.write(b'{"error":{"code":"internal","message":"simulated failure"}}')
            request.finish()
            return
        request.setHeader(b"content-type", b"application/json")
        request.registerProducer(self, True)
        self._write(b'{"data":[')
        self._next()

    def _next(self) -> None:
        self.timer = None
        if self.done or self.paused:
            return
        sim = self.sim
        n = 1 if sim.drip else sim.batch
        end = min(self.pos + n, len(self.items))
        if self.break_at is not None:
            end = min(end, self.break_at)
        if end > self.pos:
            chunk = b",".join(json.dumps(i).encode() for i in self.items[self.pos : end])
            self._write(chunk if self.pos == 0 else b"," + chunk)
            self.pos = end
        if self.break_at is not None and self.pos >= self.break_at:
            self._break()
            return
        if self.pos >= len(self.items):
            self.done = True
            self._write(b'],"meta":{"total":%d}}' % self.total)
            self.request.unregisterProducer()
            self.request.finish()
            sim.completed += 1
            return
        self.timer = sim.reactor.callLater(sim.drip, self._next)

    def _break(self) -> None:
        fail = self.fault
        if fail == "garbage":
            self._write(b",{not json at all<<<")
            return  # keep the connection open: the gateway must notice by itself
        if fail == "cut":
            # Let the first half reach the wire, then drop the connection (RST).
            self.done = True
            self.request.unregisterProducer()
            self.timer = self.sim.reactor.callLater(
                0.05, self.request.channel.transport.abortConnection
            )
        # hang_body: write nothing more, keep the connection open

    # -- IPushProducer -------------------------------------------------------------

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        if self.paused:
            self.paused = False
            if self.timer is None and not self.done:
                self.timer = self.sim.reactor.callLater(0, self._next)

    def stopProducing(self) -> None:
        self._finished(None)
