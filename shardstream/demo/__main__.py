"""``python -m shardstream.demo``: the four demo shards alone, without a gateway."""

from __future__ import annotations

import argparse
from typing import cast

from twisted.internet.address import IPv4Address, IPv6Address

from ..web.site import TrackingSite
from .inventory import SHARDS, shard_sims


def main(argv: list[str] | None = None) -> int:
    """Serve the four demo shards alone (no gateway), to put your own gateway
    config or load balancer in front."""
    from twisted.internet import reactor

    ap = argparse.ArgumentParser(prog="python -m shardstream.demo")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--base-port", type=int, default=0, help="first port (0: any free ports)")
    ap.add_argument("--fast", action="store_true", help="no latency (for load tests)")
    a = ap.parse_args(argv)
    urls = []
    for i, sim in enumerate(shard_sims(reactor)):
        if a.fast:
            sim.delay = sim.drip = 0.0
        port = reactor.listenTCP(a.base_port + i if a.base_port else 0,
                                 # Twisted's types refuse every Site here, its own included
                                 TrackingSite(sim),  # type: ignore[arg-type]
                                 interface=a.host)
        address = cast("IPv4Address | IPv6Address", port.getHost())  # a TCP port's: typed IAddress
        urls.append(f"{SHARDS[i][0]}=http://{a.host}:{address.port}")
    print("SHARDS " + " ".join(urls), flush=True)
    reactor.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
