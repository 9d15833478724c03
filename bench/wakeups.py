"""Timers and epoll registrations per list request, counted in the reactor.

    python bench/wakeups.py [--shards 4] [--items 20] [--requests 200]

One gateway process (in this interpreter) in front of N loopback demo shards
answering at once (S2-like); a keep-alive client in the same reactor asks
the list REQUESTS times, after a warm-up. Counted while measuring: calls to
reactor.callLater (timers set, including ``callLater(0)`` hand-offs) and the
reactor's epoll register/modify/unregister calls, per request, for each
``upstream.client``. Shard and client sides are in the same process, so the
figures include the demo shards' own (the same in both rows).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import defer, epollreactor

epollreactor.install()

from twisted.internet import reactor  # noqa: E402
from twisted.web.client import Agent, HTTPConnectionPool, readBody  # noqa: E402
from twisted.web.server import Site  # noqa: E402

from shardstream.core import config as config_mod  # noqa: E402
from shardstream.daemon.service import GatewayService  # noqa: E402
from shardstream.daemon.startup import prepare_process  # noqa: E402
from shardstream.demo.shardsim import ShardSim  # noqa: E402

counts: Counter[str] = Counter()


class CountingPoller:
    """The reactor's epoll object, counted."""

    def __init__(self, poller: Any) -> None:
        self._p = poller

    def register(self, *a: Any) -> Any:
        counts["epoll_register"] += 1
        return self._p.register(*a)

    def modify(self, *a: Any) -> Any:
        counts["epoll_modify"] += 1
        return self._p.modify(*a)

    def unregister(self, *a: Any) -> Any:
        counts["epoll_unregister"] += 1
        return self._p.unregister(*a)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._p, name)


def count_timers() -> None:
    original = reactor.callLater

    def callLater(delay: float, f: Any, *a: Any, **kw: Any) -> Any:
        counts["timers" if delay > 0 else "call_later_0"] += 1
        return original(delay, f, *a, **kw)

    reactor.callLater = callLater  # type: ignore[method-assign]


@defer.inlineCallbacks
def measure(client: str, urls: dict[str, str], n: int, items: int) -> Any:
    cfg = config_mod.parse({
        "server": {"listen": "tcp:0:interface=127.0.0.1", "access_log": False},
        "upstream": {"client": client},
        "shards": {name: {"urls": [url]} for name, url in urls.items()},
        "routes": [{"path": "/v3/events", "mode": "scatter", "items": "data.item"}]}, "<bench>")
    service = GatewayService(cfg, signals=False)
    service.startService()
    url = f"http://127.0.0.1:{service.address.port}/v3/events".encode()
    agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=True))
    for _ in range(20):  # warm-up: connections pooled on both sides
        yield readBody((yield agent.request(b"GET", url)))
    counts.clear()
    for _ in range(n):
        response = yield agent.request(b"GET", url)
        body = yield readBody(response)
        assert response.code == 200 and body.count(b'"shard"') == len(urls) * items, body[:200]
    per = {k: v / n for k, v in sorted(counts.items())}
    yield service.stopService()
    return per


@defer.inlineCallbacks
def main(a: argparse.Namespace) -> Any:
    prepare_process()
    reactor._poller = CountingPoller(reactor._poller)  # type: ignore[attr-defined]
    count_timers()
    urls = {}
    for i in range(a.shards):
        data = [{"id": n, "shard": f"s{i}", "title": f"item {n}"} for n in range(a.items)]
        port = reactor.listenTCP(0, Site(ShardSim(f"s{i}", data)),
                                 interface="127.0.0.1")
        urls[f"s{i}"] = f"http://127.0.0.1:{port.getHost().port}"
    print(f"{a.shards} shards x {a.items} items, {a.requests} requests, one keep-alive client; "
          "per request:")
    for client in ("lean", "twisted"):
        per = yield measure(client, urls, a.requests, a.items)
        print(f"  upstream.client = {client!r:10} " + "  ".join(f"{k} {v:.2f}" for k, v in per.items()))
    reactor.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--items", type=int, default=20)
    ap.add_argument("--requests", type=int, default=200)
    args = ap.parse_args()
    reactor.callWhenRunning(lambda: main(args).addErrback(lambda f: (f.printTraceback(), reactor.stop())))
    reactor.run()
