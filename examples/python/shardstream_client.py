#!/usr/bin/env python3
"""A streaming client for shardstream lists: standard library HTTP plus ijson.

A starting point for partners that read a list behind a shardstream gateway.
It reads each page's JSON document incrementally (items are yielded while the
gateway is still streaming, the body is never held in memory), follows
``meta.next_cursor`` to the end of the list, collects the shards that failed
on each page, retries 429 and 503 answers after their ``Retry-After``, and
never passes a cut response off as a short list.

As a library::

    from shardstream_client import Client, TruncatedResponse

    client = Client("https://api.example.com", api_key="ssk_...")
    for item in client.iter_items("/v3/events", {"sort": "starts_at", "limit": 100}):
        handle(item)
    if not client.complete:
        for f in client.failed:  # {"shard": ..., "error": ..., "page": 1, "request_id": ...}
            log(f)

Numbers that are not integers come out of ijson as ``decimal.Decimal`` (exact;
prices stay exact). :func:`dumps` writes an item back to compact JSON with
those numbers unchanged.

From the command line::

    python shardstream_client.py URL [--key KEY] [--max-retries N] [--timeout S]

``URL`` is a full list URL, e.g.
``http://127.0.0.1:8080/v3/events?sort=starts_at&limit=50``. The key may also
come from the ``SHARDSTREAM_KEY`` environment variable. Each item is printed
as one compact JSON line on stdout as it arrives; progress, retries, errors
(with the ``X-Request-Id`` of the answer, to quote to support) and a summary
go to stderr::

    pages: 5
    items: 240
    complete: false
    failed shard apac: truncated (items_delivered=30, page 1, request id 4f2c...)

Exit codes:

    0  every page was complete: the whole list, every shard answered
    1  the gateway could not be reached (connection refused, DNS, TLS, ...)
    2  bad command line
    3  some shard failed on some page (``meta.complete`` was false); the
       failed shards are named on stderr. The cursors keep a failed shard's
       position, so following them to the end still delivers its items on a
       later page, but that page's part of the list missed them (a sorted
       list is then not in one global order).
    4  a response was truncated: the gateway cut the stream before its meta
       (e.g. ``partial=false`` and a shard failed after the first item);
       the items printed so far are not a complete page
    5  a 429 or 503 answer was still there after ``--max-retries`` retries
    6  an error answer (400, 401, 403, 404, 410, 502, 504, ...): its code and
       message are printed on stderr
"""

from __future__ import annotations

import argparse
import email.utils
import http.client
import json
import os
import ssl
import sys
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode, urlsplit

import ijson

__all__ = ["Client", "ErrorAnswer", "Page", "RetriesExhausted", "ShardstreamError",
           "TruncatedResponse", "dumps", "main"]

NDJSON = "application/x-ndjson"
USER_AGENT = "shardstream-example-client/1.0 (python)"
MAX_WAIT = 300.0  # never sleep longer than this for one Retry-After


class ShardstreamError(Exception):
    """Base of this client's errors; ``request_id`` is the answer's X-Request-Id."""

    exit_code = 1

    def __init__(self, message: str, *, request_id: str | None = None, url: str = "") -> None:
        super().__init__(message)
        self.request_id = request_id
        self.url = url

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text} (request id {self.request_id})" if self.request_id else text


class TruncatedResponse(ShardstreamError):
    """The response ended before its meta: the page is cut, not short."""

    exit_code = 4

    def __init__(self, message: str, *, items: int = 0, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.items = items  # items of this page that were yielded before the cut


class RetriesExhausted(ShardstreamError):
    """429 or 503 more times in a row than the client may retry."""

    exit_code = 5

    def __init__(self, message: str, *, status: int, code: str | None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.status, self.code = status, code


class ErrorAnswer(ShardstreamError):
    """Any other non-200 answer: ``error`` is the body's ``error`` object."""

    exit_code = 6

    def __init__(self, message: str, *, status: int, error: dict[str, Any], **kw: Any) -> None:
        super().__init__(message, **kw)
        self.status, self.error = status, error
        self.code = error.get("code")


@dataclass
class Page:
    """One page of the list, as the client saw it."""

    number: int
    url: str
    request_id: str | None
    items: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    retries: int = 0

    @property
    def failed(self) -> list[dict[str, Any]]:
        return list(self.meta.get("shards", {}).get("failed", []))

    @property
    def complete(self) -> bool:
        # ``complete`` is the gateway's own answer; without it, no failed shard.
        return bool(self.meta.get("complete", not self.failed))


class _Stream:
    """The response as ijson reads it: what the socket has, as soon as it has
    it (``read1``: a plain ``read(n)`` would wait for n bytes), and every way a
    body can stop short turned into :class:`TruncatedResponse`."""

    def __init__(self, response: http.client.HTTPResponse, page: Page) -> None:
        self.response, self.page = response, page

    def read(self, n: int = -1) -> bytes:
        if n == 0:
            return b""
        try:
            data = self.response.read1(n if n > 0 else 65536)
        except http.client.IncompleteRead:
            raise self.cut("the connection closed before the end of the chunked body") from None
        except TimeoutError:  # socket.timeout too
            raise self.cut("no data from the gateway for too long in the middle of the body") \
                from None
        except (ConnectionError, OSError) as e:
            raise self.cut(f"the connection failed in the middle of the body ({e})") from None
        if not data and self.response.length:  # Content-Length not reached
            raise self.cut("the connection closed before Content-Length was reached")
        return data

    def cut(self, why: str) -> TruncatedResponse:
        return TruncatedResponse(f"page {self.page.number} truncated after {self.page.items} "
                                 f"items: {why}", items=self.page.items,
                                 request_id=self.page.request_id, url=self.page.url)


class Client:
    """Reads shardstream lists from ``base_url`` (e.g. ``https://api.example.com``).

    ``max_retries`` bounds the retries of one page after a 429 or 503;
    ``on_page(page)`` is called when each page's meta is in, ``log(text)``
    receives progress lines (retries), default: nothing.

    After (or during) :meth:`iter_items`: ``pages`` (the :class:`Page` list),
    ``failed`` (every failed shard of every page, each with ``page`` and
    ``request_id`` added), ``request_ids`` and ``complete``.
    """

    def __init__(self, base_url: str, api_key: str | None = None, *, max_retries: int = 5,
                 timeout: float = 60.0, on_page: Callable[[Page], None] | None = None,
                 log: Callable[[str], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.scheme, self.netloc = parts.scheme, parts.netloc
        self.host, self.port = parts.hostname, parts.port
        self.prefix = parts.path.rstrip("/")
        self.api_key = api_key
        self.max_retries = max_retries
        self.timeout = timeout
        self.on_page, self.log, self.sleep = on_page, log, sleep
        self.ssl_context = ssl_context
        self.pages: list[Page] = []
        self.failed: list[dict[str, Any]] = []
        self.request_ids: list[str] = []

    @property
    def complete(self) -> bool:
        return all(p.complete for p in self.pages)

    @property
    def items(self) -> int:
        return sum(p.items for p in self.pages)

    # -- the list ------------------------------------------------------------------

    def iter_items(self, path: str, params: dict[str, Any] | None = None) -> Iterator[Any]:
        """Every item of the list at ``path``, page after page, as they arrive.

        ``path`` may carry a query string of its own (``/v3/events?sort=starts_at``);
        ``params`` are added to it. Raises :class:`TruncatedResponse`,
        :class:`RetriesExhausted`, :class:`ErrorAnswer` or (network)
        :class:`ShardstreamError`.
        """
        path, _, query = (self.prefix + "/" + path.lstrip("/")).partition("?")
        query = "&".join(q for q in (query, urlencode(params or {}, doseq=True)) if q)
        target = path + ("?" + query if query else "")
        while True:
            meta = yield from self._page(target)
            cursor = meta.get("next_cursor")
            if cursor is None:
                return
            # A cursor page takes only the cursor: it carries the filters,
            # the sort and the limit of the first page.
            target = path + "?" + urlencode({"cursor": cursor})

    def _page(self, target: str) -> Generator[Any, None, dict[str, Any]]:
        """One page's items (retrying 429/503 first); returns its meta."""
        page = Page(len(self.pages) + 1, self._url(target), None)
        meta: dict[str, Any] = {}
        for attempt in range(self.max_retries + 1):
            conn, response = self._request(target)
            try:
                page.request_id = response.getheader("X-Request-Id")
                if page.request_id:
                    self.request_ids.append(page.request_id)
                if response.status == 200:
                    page.retries = attempt
                    meta = yield from self._read_list(response, page)
                    break
                error = self._error_body(response, page)
            finally:
                conn.close()
            code = error.get("code")
            if response.status not in (429, 503):
                raise ErrorAnswer(f"page {page.number}: {response.status} {code}: "
                                  f"{error.get('message', '')}", status=response.status,
                                  error=error, request_id=page.request_id, url=page.url)
            if attempt == self.max_retries:
                raise RetriesExhausted(
                    f"page {page.number}: {response.status} {code} still, after "
                    f"{self.max_retries} retries: {error.get('message', '')}",
                    status=response.status, code=code, request_id=page.request_id, url=page.url)
            wait = _retry_after(response.getheader("Retry-After"))
            self._log(f"page {page.number}: {response.status} {code}, retry "
                      f"{attempt + 1} of {self.max_retries} in {wait:g} s "
                      f"(request id {page.request_id})")
            # 503 shards_unavailable: the same request again (the same cursor).
            self.sleep(wait)
        page.meta = meta
        self.pages.append(page)
        for f in page.failed:
            self.failed.append({**f, "page": page.number, "request_id": page.request_id})
        if self.on_page is not None:
            self.on_page(page)
        return meta

    def _read_list(self, response: http.client.HTTPResponse,
                   page: Page) -> Generator[Any, None, dict[str, Any]]:
        """Yields ``data``'s items as ijson finds them; returns ``meta``."""
        meta: dict[str, Any] | None = None
        events = ijson.parse(_Stream(response, page))
        try:
            for prefix, event, value in events:
                if prefix == "data.item":
                    if event in ("start_map", "start_array"):
                        value = _build(events, event)
                    elif event in ("end_map", "end_array"):
                        continue  # never reached: _build consumes up to the end
                    page.items += 1
                    yield value
                elif prefix == "meta" and event == "start_map":
                    meta = _build(events, event)
        except ijson.IncompleteJSONError as e:
            raise _Stream(response, page).cut(f"the body ended before the document did ({e})") \
                from None
        except ijson.JSONError as e:
            raise _Stream(response, page).cut(f"the body is not valid JSON ({e})") from None
        if meta is None:
            raise _Stream(response, page).cut("the document has no meta")
        return meta

    # -- HTTP ----------------------------------------------------------------------

    def _url(self, target: str) -> str:
        return f"{self.scheme}://{self.netloc}{target}"

    def _request(self, target: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        if self.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=self.ssl_context)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        try:
            conn.request("GET", target, headers=headers)
            return conn, conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise ShardstreamError(f"cannot get {self._url(target)}: {e}",
                                   url=self._url(target)) from e

    def _error_body(self, response: http.client.HTTPResponse, page: Page) -> dict[str, Any]:
        try:
            body = response.read(1 << 20)
            error = json.loads(body)["error"]
            return error if isinstance(error, dict) else {"message": str(error)}
        except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError):
            return {"code": None, "message": f"HTTP {response.status} {response.reason}"}

    def _log(self, text: str) -> None:
        if self.log is not None:
            self.log(text)


def _build(events: Iterator[tuple[str, str, Any]], first: str) -> Any:
    """The object or array whose start event was just read, from ijson's events."""
    builder = ijson.ObjectBuilder()
    builder.event(first, None)
    depth = 1
    for _, event, value in events:
        builder.event(event, value)
        if event in ("start_map", "start_array"):
            depth += 1
        elif event in ("end_map", "end_array"):
            depth -= 1
            if depth == 0:
                return builder.value
    raise ijson.IncompleteJSONError("the body ended inside an item")


def _retry_after(value: str | None) -> float:
    """Retry-After in seconds (a number or an HTTP date); 1 if absent or odd."""
    if not value:
        return 1.0
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return 1.0
    return min(max(seconds, 0.0), MAX_WAIT)


def dumps(value: Any) -> str:
    """Compact JSON, with ijson's Decimal numbers written exactly as they came."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(str(k)) + ":" + dumps(v) for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


# -- command line ----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print every item of a shardstream list.")
    parser.add_argument("url",
                        help="a full list URL, e.g. http://127.0.0.1:8080/v3/events?limit=50")
    parser.add_argument("--key", default=os.environ.get("SHARDSTREAM_KEY"),
                        help="API key, sent as Authorization: Bearer KEY (or SHARDSTREAM_KEY)")
    parser.add_argument("--max-retries", type=int, default=5,
                        help="retries of one page after a 429 or 503 (default 5)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds without data before giving up (default 60)")
    args = parser.parse_args(argv)
    parts = urlsplit(args.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        parser.error(f"not an http(s) URL: {args.url}")
    if args.max_retries < 0:
        parser.error("--max-retries must be 0 or more")

    def err(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def on_page(page: Page) -> None:
        for f in page.failed:
            err(f"page {page.number}: shard {f.get('shard')} failed: {f.get('error')} "
                f"(request id {page.request_id})")

    client = Client(f"{parts.scheme}://{parts.netloc}", args.key, max_retries=args.max_retries,
                    timeout=args.timeout, on_page=on_page, log=err)
    out = sys.stdout
    code, printed = 0, 0
    target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    try:
        for item in client.iter_items(target):
            out.write(dumps(item) + "\n")
            out.flush()
            printed += 1
    except ShardstreamError as e:
        err(f"error: {e}")
        code = e.exit_code
    except KeyboardInterrupt:
        err("interrupted")
        code = 130
    except BrokenPipeError:  # e.g. piped into head: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0 if client.complete else 3
    err(f"pages: {len(client.pages)}")
    err(f"items: {printed}")
    err(f"complete: {'true' if client.complete and code == 0 else 'false'}")
    for f in client.failed:
        err(f"failed shard {f.get('shard')}: {f.get('error')} "
            f"(items_delivered={f.get('items_delivered')}, page {f['page']}, "
            f"request id {f['request_id']})")
    if code == 0 and not client.complete:
        code = 3
    return code


if __name__ == "__main__":
    sys.exit(main())
