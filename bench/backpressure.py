"""Memory under a slow client: stream a large list through one gateway process
to a client that reads at a fixed, low rate, and watch the gateway's RSS.

    python bench/backpressure.py [--mb 500] [--rate 25]

A shard process generates ``--mb`` MB of ~1 KB items on the fly (with
backpressure, so the shard itself stays small); the gateway (one worker,
run from this tree) fans out to it; the client reads at ``--rate`` MB/s.
If the gateway buffered what the client has not read yet, its RSS would
grow by about the difference; with backpressure it stays flat.
Loopback only; ends by itself.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SHARD = textwrap.dedent('''
    import sys
    from twisted.internet import reactor
    from twisted.web import server, resource
    from zope.interface import implementer
    from twisted.internet.interfaces import IPushProducer

    N = int(sys.argv[2])
    PAD = "x" * 900

    @implementer(IPushProducer)
    class Writer:
        def __init__(self, request):
            self.request, self.i, self.paused, self.done = request, 0, False, False
            request.registerProducer(self, True)
            request.write(b'{"data":[')
            reactor.callLater(0, self.more)
        def more(self):
            while not self.paused and not self.done:
                end = min(self.i + 200, N)
                chunk = ",".join('{"id":%d,"pad":"%s"}' % (k, PAD) for k in range(self.i, end))
                self.request.write(((b"," if self.i else b"") + chunk.encode()))
                self.i = end
                if self.i >= N:
                    self.done = True
                    self.request.write(b"]}")
                    self.request.unregisterProducer()
                    self.request.finish()
        def pauseProducing(self): self.paused = True
        def resumeProducing(self):
            if self.paused:
                self.paused = False
                reactor.callLater(0, self.more)
        def stopProducing(self): self.done = True

    class Items(resource.Resource):
        isLeaf = True
        def render_GET(self, request):
            request.setHeader(b"content-type", b"application/json")
            Writer(request)
            return server.NOT_DONE_YET

    site = server.Site(Items())
    site.log = lambda r: None
    port = reactor.listenTCP(int(sys.argv[1]), site, interface="127.0.0.1")
    print("READY", flush=True)
    reactor.run()
''')


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=500, help="size of the list to stream")
    ap.add_argument("--rate", type=float, default=25.0, help="client read rate, MB/s")
    a = ap.parse_args()
    items = a.mb * 1024 * 1024 // 925  # ~925 bytes per item as encoded
    shard_port, gw_port = free_port(), free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = []
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "gw.toml"
        conf.write_text(
            f'[server]\nlisten = "tcp:{gw_port}:interface=127.0.0.1"\naccess_log = false\n'
            f'[upstream]\nidle_timeout = 600\ntotal_timeout = 3600\n'
            f'[shards.big]\nurls = ["http://127.0.0.1:{shard_port}"]\n'
            '[[routes]]\npath = "/items"\nmode = "scatter"\nitems = "data.item"\n'
        )
        try:
            shard = subprocess.Popen([sys.executable, "-c", SHARD, str(shard_port), str(items)],
                                     stdout=subprocess.PIPE, text=True)
            procs.append(shard)
            assert shard.stdout.readline().startswith("READY")
            gw = subprocess.Popen(
                [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
                 "--pidfile=", "--logfile=/dev/null", "shardstream", "--config", str(conf)],
                cwd=tmp, env=env)
            procs.append(gw)
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", gw_port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            time.sleep(0.5)
            base = rss_mb(gw.pid)
            s = socket.create_connection(("127.0.0.1", gw_port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
            s.sendall(b"GET /items HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            got, peak, start = 0, base, time.monotonic()
            per_tick = int(a.rate * 1024 * 1024 / 20)
            tail = b""
            while True:
                tick = time.monotonic()
                n = 0
                while n < per_tick:
                    data = s.recv(min(65536, per_tick - n))
                    if not data:
                        break
                    n += len(data)
                    tail = (tail + data)[-64:]
                got += n
                peak = max(peak, rss_mb(gw.pid))
                if not data:
                    break
                time.sleep(max(0.0, 0.05 - (time.monotonic() - tick)))
            elapsed = time.monotonic() - start
            s.close()
            complete = b'"failed":[]' in tail
            print(f"streamed {got / 1e6:.0f} MB to a client reading {a.rate:g} MB/s in {elapsed:.1f} s"
                  f" ({'complete, no shard failed' if complete else 'INCOMPLETE'})")
            print(f"gateway RSS: {base:.1f} MB before, peak {peak:.1f} MB, "
                  f"growth {peak - base:.1f} MB")
        finally:
            for p in procs:
                p.terminate()
                p.wait(timeout=10)


if __name__ == "__main__":
    main()
