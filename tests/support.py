"""Real servers and clients on 127.0.0.1 for the tests (no mocks)."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import Any

import treq
from twisted.internet import defer, reactor, task
from twisted.internet.protocol import Protocol
from twisted.trial import unittest
from twisted.web.client import HTTPConnectionPool

from shardstream.core import config as config_mod
from shardstream.web.site import TrackingSite
from shardstream.daemon.service import GatewayService
from shardstream.demo.shardsim import ShardSim


def items(shard: str, n: int, **extra: Any) -> list[dict[str, Any]]:
    """n distinct items of one shard; ids collide across shards on purpose."""
    return [{"id": i, "shard": shard, "title": f"{shard} item {i}", **extra} for i in range(1, n + 1)]


def listen_port() -> int:
    """A free port for a daemon to listen on, outside the kernel's ephemeral
    range: one from free_port() may be handed to the daemon's own outgoing or
    port-0 sockets before it binds it."""
    import random

    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(100):
        port = random.randint(max(1024, low - 12000), low - 1)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    return free_port()


def free_port() -> int:
    """A port nobody listens on (connection refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@dataclass
class Fetched:
    code: int
    headers: Any
    body: bytes
    chunks: list[tuple[float, bytes]] = field(default_factory=list)

    def json(self) -> Any:
        import json

        return json.loads(self.body)


class GatewayTestCase(unittest.TestCase):
    """Starts simulated shards and a gateway in front of them, all on loopback."""

    timeout = 30
    config_file: str | None = None  # set to write the gateway's config to a file
    item_parser: str | None = None  # server.item_parser of every gateway (None: its default)

    def setUp(self) -> None:
        self.sims: dict[str, ShardSim] = {}
        self.urls: dict[str, str] = {}
        self.shard_sites: dict[str, tuple[Any, TrackingSite]] = {}
        self._sites: list[TrackingSite] = []
        self._pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(self._settle)

    def _settle(self) -> defer.Deferred:
        for site in self._sites:
            site.abort_all()
        return task.deferLater(reactor, 0.05, lambda: None)

    def shard(self, name: str, data: list[dict[str, Any]] | None = None, **kw: Any) -> str:
        sim = ShardSim(name, items(name, 5) if data is None else data, **kw)
        site = TrackingSite(sim)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self._sites.append(site)
        self.sims[name] = sim
        self.urls[name] = f"http://127.0.0.1:{port.getHost().port}"
        self.shard_sites[name] = (port, site)
        return self.urls[name]

    @defer.inlineCallbacks
    def kill(self, name: str) -> Any:
        """The shard's process dies: its port closes and its connections reset."""
        port, site = self.shard_sites.pop(name)
        yield port.stopListening()
        site.abort_all()

    def blackhole(self) -> str:
        """A URL whose connect never completes: full accept queue, never accepted."""
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(0)
        filler = socket.socket()
        filler.connect(s.getsockname())
        self.addCleanup(s.close)
        self.addCleanup(filler.close)
        return f"http://127.0.0.1:{s.getsockname()[1]}"

    def gateway(self, routes: list[dict[str, Any]] | None = None, shards: dict[str, str] | None = None,
                upstream: dict[str, Any] | None = None, **top: Any) -> str:
        shards = self.urls if shards is None else shards
        data = {
            "server": {"listen": "tcp:0:interface=127.0.0.1", "drain_timeout": 1.0,
                       **({"item_parser": self.item_parser} if self.item_parser else {}),
                       **top.pop("server", {})},
            "upstream": upstream or {},
            "shards": {name: url if isinstance(url, dict)
                       else {"urls": url if isinstance(url, list) else [url]}
                       for name, url in shards.items()},
            "routes": routes or [{"path": "/v3/events", "mode": "scatter", "items": "data.item"}],
            **top,
        }
        path = top_path = None
        if self.config_file:  # reload tests: the config lives in a real file
            path = top_path = self.config_file
            with open(path, "w") as f:
                f.write(_toml(data))
            config = config_mod.load(path)
        else:
            config = config_mod.parse(data, "<test>")
        self.service = GatewayService(config, signals=False, config_path=top_path)
        self.service.startService()
        self._sites.append(self.service.site)
        self.addCleanup(self.service.stopService)
        return f"http://127.0.0.1:{getattr(self.service.address, 'port', 0)}"

    @defer.inlineCallbacks
    def fetch(self, url: str, method: str = "GET", headers: dict[str, Any] | None = None,
              body: bytes | None = None, on_chunk: Any = None) -> Any:
        start = time.monotonic()
        resp = yield treq.request(method, url, headers=headers, data=body, pool=self._pool,
                                  unbuffered=True)
        chunks: list[tuple[float, bytes]] = []

        def collect(b: bytes) -> None:
            chunks.append((time.monotonic() - start, b))
            if on_chunk is not None:
                on_chunk(b)

        yield treq.collect(resp, collect)
        return Fetched(resp.code, resp.headers, b"".join(c for _, c in chunks), chunks)

    @defer.inlineCallbacks
    def wait_for(self, condition: Any, timeout: float = 5.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                state = {n: (s.lost, s.completed, s.bytes_sent, len(s.requests))
                         for n, s in self.sims.items()}
                self.fail(f"timed out waiting for {what}; shards (lost, completed, sent, "
                          f"requests): {state}")
            yield task.deferLater(reactor, 0.01, lambda: None)


def _toml(data: dict[str, Any]) -> str:
    """Just enough TOML for the test configs (tables, arrays of tables, scalars, lists)."""
    import json

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(v)

    lines: list[str] = []

    def table(name: str, t: dict[str, Any], header: str) -> None:
        scalars = {k: v for k, v in t.items() if not isinstance(v, dict)}
        lines.append(header)
        lines.extend(f"{json.dumps(k)} = {value(v)}" for k, v in scalars.items())
        for k, v in t.items():
            if isinstance(v, dict):
                sub = f"{name}.{json.dumps(k)}"
                table(sub, v, f"[{sub}]")

    for key, v in data.items():
        if key == "routes":
            for route in v:
                table("routes", route, "[[routes]]")
        else:
            table(json.dumps(key), v, f"[{json.dumps(key)}]")
    return "\n".join(lines) + "\n"


def temp_dir(testcase: unittest.TestCase) -> str:
    """A fresh directory removed after the test (trial's mktemp writes under the cwd)."""
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="shardstream-test-")
    testcase.addCleanup(shutil.rmtree, path, True)
    return path


def self_signed(directory: str) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, as PEM files in ``directory``."""
    import datetime
    import ipaddress
    import os

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    os.makedirs(directory, exist_ok=True)
    cert_path, key_path = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


class RawClient(Protocol):
    """A hand-driven HTTP client: sends bytes, records what arrives, can vanish."""

    def __init__(self) -> None:
        # A bytearray grows in place: bytes += would copy everything received
        # so far on every read (quadratic; seconds of CPU for a 30 MB response,
        # on the reactor the gateway and the shards share in these tests).
        self.received = bytearray()
        self.closed = defer.Deferred()
        self.got_data = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if not self.got_data.called:
            self.got_data.callback(None)

    def connectionLost(self, reason: Any) -> None:
        self.closed.callback(reason.value)  # a Failure passed to callback() would errback


@defer.inlineCallbacks
def raw_connect(port: int) -> Any:
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    client = RawClient()
    yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
    return client


class RawShard(Protocol):
    """A shard at the TCP level: sees request bytes as they arrive, answers once
    the whole body (by Content-Length) is in, or (``mode``) at once when the
    request head is in: ``"early"`` with a 401, ``"reset"`` with a TCP reset."""

    def __init__(self, owner: "RawShardFactory") -> None:
        self.owner = owner
        self.data = b""

    def connectionMade(self) -> None:
        self.owner.connections.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        head, sep, body = self.data.partition(b"\r\n\r\n")
        if not sep:
            return
        if self.owner.mode == "early" and not getattr(self, "answered", False):
            self.answered = True
            self.transport.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
                                 b"WWW-Authenticate: Bearer\r\nContent-Length: 16\r\n\r\n"
                                 b'{"error":"auth"}')
            return
        if self.owner.mode == "reset":
            self.transport.abortConnection()
            return
        lines = [line.lower() for line in head.split(b"\r\n")]
        if b"transfer-encoding: chunked" in lines:
            complete = body.endswith(b"\r\n0\r\n\r\n") or body == b"0\r\n\r\n"
        else:
            length = next((int(line.split(b":", 1)[1]) for line in lines
                           if line.startswith(b"content-length:")), 0)
            complete = len(body) >= length
        if complete and not getattr(self, "answered", False):
            self.answered = True
            reply = b'{"stored":%d}' % len(body)
            self.transport.write(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(reply), reply))

    def connectionLost(self, reason: Any) -> None:
        self.owner.closed += 1

    def body_bytes(self) -> int:
        return len(self.data.partition(b"\r\n\r\n")[2])


class RawShardFactory:
    def __init__(self, mode: str | None = None) -> None:
        self.mode = mode
        self.connections: list[RawShard] = []
        self.closed = 0

    def listen(self, testcase: unittest.TestCase) -> str:
        from twisted.internet.protocol import Factory

        factory = Factory.forProtocol(lambda: RawShard(self))
        factory.noisy = False
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        testcase.addCleanup(port.stopListening)
        testcase.addCleanup(lambda: [c.transport.abortConnection() for c in self.connections])
        return f"http://127.0.0.1:{port.getHost().port}"


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A Prometheus text exposition as {(name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}
