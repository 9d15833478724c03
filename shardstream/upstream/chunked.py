"""A faster chunked-body decoder for Twisted's HTTP client.

A shard that streams its list flushes item by item, so its body arrives as
thousands of small HTTP chunks. Twisted's ``_ChunkedTransferDecoder`` walks
a small state machine per chunk and hands each chunk on through four layers
of callbacks, a large share of the gateway's CPU under load
(bench/RESULTS.md). This subclass decodes every *complete* chunk of one read in
a tight loop and hands them on as one piece; anything else (a chunk split
across reads, chunk extensions, the last chunk and its trailers, malformed
input) goes through Twisted's own code, unchanged. The bytes, their order,
the end of the body and the errors are the same as Twisted's: a property
test feeds both decoders the same input in random splits.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from twisted.web import _newclient, http

# A whole chunk's size line, bare hex digits (no extension): what streaming
# servers send. 15 hex digits keeps a size within maxChunkSizeLineLength.
_SIZE_LINE = re.compile(rb"([0-9a-fA-F]{1,15})\r\n")


class CoalescingChunkedDecoder(http._ChunkedTransferDecoder):
    def __init__(self, dataCallback: Callable[[bytes], None],
                 finishCallback: Callable[[bytes], None]) -> None:
        super().__init__(dataCallback, finishCallback)
        self._deliver = dataCallback
        self._finish = finishCallback
        self._pieces: list[bytes] = []
        self._broken = False  # the consumer raised: the body must not end as complete
        # Twisted's state methods call these: collect, and flush before the end.
        self.dataCallback = self._pieces.append
        self.finishCallback = self._finished

    def _finished(self, rest: bytes) -> None:
        self._flush()
        self._finish(rest)

    def _flush(self) -> None:
        pieces = self._pieces
        if pieces:
            data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            pieces.clear()
            try:
                self._deliver(data)
            except BaseException:
                # Twisted's decoder would not have reached the last chunk: say
                # the body was lost, not finished, whatever was parsed after.
                self._broken = True
                raise

    def noMoreData(self) -> None:
        if self._broken:
            raise http._DataLoss("the body's consumer failed")
        super().noMoreData()

    def dataReceived(self, data: bytes) -> None:
        if self._broken:
            raise RuntimeError("the body's consumer failed; no more data is taken")
        try:
            data = self._resume(data)
            if self.state == "CHUNK_LENGTH" and not self._buffer:
                data = self._whole_chunks(data)
            if data:
                super().dataReceived(data)
        finally:
            self._flush()  # what came before an error is delivered, as Twisted does

    def _resume(self, data: bytes) -> bytes:
        """Where Twisted's machine stopped at the end of the last read (in a
        chunk's body, its CRLF, or its size line), finish that chunk here, so
        that the rest of this read takes the fast path again: a body whose
        chunks straddle reads would otherwise go through Twisted's per-chunk
        states from the first split on."""
        state, buffer = self.state, self._buffer
        if not data:
            return data
        if state == "BODY" and not buffer:
            n = self.length
            if len(data) < n:
                self.length = n - len(data)
                self._pieces.append(data)
                return b""
            self._pieces.append(data[:n])
            data = data[n:]
            self.state = state = "CRLF"
        if state == "CRLF" and len(buffer) < 2:
            need = 2 - len(buffer)  # a CR may be in already
            marker = bytes(buffer) + data[:need]
            if marker != b"\r\n"[:len(marker)]:
                return data  # malformed: Twisted says so
            if len(marker) < 2:
                buffer += data
                return b""
            del buffer[:]
            data = data[need:]
            self.state = "CHUNK_LENGTH"
        elif state == "CHUNK_LENGTH" and buffer:
            data = bytes(buffer) + data  # a size line split across reads
            del buffer[:]
            self._start = 0
        return data

    def _whole_chunks(self, data: bytes) -> bytes:
        """Take every complete chunk at the start of ``data``; return the rest."""
        match = _SIZE_LINE.match
        take = self._pieces.append
        pos, end = 0, len(data)
        while pos < end:
            m = match(data, pos)
            if m is None:
                break
            size = int(m.group(1), 16)
            start = m.end()
            stop = start + size
            if size == 0 or stop + 2 > end or data[stop:stop + 2] != b"\r\n":
                break  # the last chunk, a chunk not all here, or malformed: Twisted's job
            take(data[start:stop])
            pos = stop + 2
        return data[pos:] if pos else data


def install() -> bool:
    """Make Twisted's HTTP client use the coalescing decoder (process-wide:
    it behaves the same, only faster). False if Twisted's internals are not
    the ones it was written against; then nothing changes."""
    parser: Any = getattr(_newclient, "HTTPClientParser", None)
    decoders = getattr(parser, "_transferDecoders", None)
    if not isinstance(decoders, dict):
        return False
    current = decoders.get(b"chunked")
    if current is CoalescingChunkedDecoder:
        return True
    if current is not http._ChunkedTransferDecoder:
        return False
    try:
        probe = CoalescingChunkedDecoder(lambda data: None, lambda rest: None)
        probe.dataReceived(b"1\r\na\r\n2\r\nbc\r\n0\r\n\r\n")
    except Exception:
        return False  # not the decoder this was written against
    parser._transferDecoders = {**decoders, b"chunked": CoalescingChunkedDecoder}
    return True
