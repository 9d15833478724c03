"""One way to reach Redis (txredisapi) and to say once when it stops or
starts answering: shared by the rate limits and the shard directory."""

from __future__ import annotations

from typing import Any, Callable
from urllib.parse import urlsplit

from twisted.internet import defer
from twisted.logger import Logger

log = Logger(namespace="shardstream")


def connect(url: str, timeout: float, poolsize: int = 4) -> Any:
    """A lazy, self-reconnecting txredisapi pool for ``redis://host:port/db``."""
    import txredisapi  # type: ignore[import-untyped]

    parts = urlsplit(url)
    db = int(parts.path.strip("/") or 0)
    # Database 0 is where a connection starts: no SELECT then. (txredisapi stops
    # reconnecting for good when a new connection's SELECT times out, as it does
    # when Redis is frozen a while, SIGSTOP or a long fork, and never comes back.)
    return txredisapi.lazyConnectionPool(
        parts.hostname, parts.port or 6379, dbid=db or None,
        poolsize=poolsize, reconnect=True, connectTimeout=max(timeout, 0.5),
        replyTimeout=max(timeout * 4, 0.5))


class Reachability:
    """Whether a Redis answers, logged once per change and set on a gauge."""

    def __init__(self, what: str, url: str, gauge: Callable[[], Any],
                 down_means: str) -> None:
        self.what, self.url, self.gauge, self.down_means = what, url, gauge, down_means
        self.up: bool | None = None  # unknown until the first answer

    def answered(self) -> None:
        if self.up is not True:
            if self.up is False:
                log.info("{what}: Redis at {url} answers again", what=self.what, url=self.url,
                         event="redis_up")
            self.up = True
            self.gauge().set(1)

    def failed(self, failure: Any) -> None:
        if self.up is not False:
            log.warn("{what}: Redis at {url} does not answer ({error}); {means}",
                     what=self.what, url=self.url,
                     error=("no answer in time" if failure.check(defer.TimeoutError)
                            else failure.getErrorMessage() or failure.type.__name__),
                     means=self.down_means, event="redis_down")
            self.up = False
            self.gauge().set(0)
