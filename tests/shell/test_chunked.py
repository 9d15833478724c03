"""The coalescing chunked decoder against Twisted's own, byte for byte (sans-IO)."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.web import _newclient, http

from shardstream.upstream.chunked import CoalescingChunkedDecoder, install


def run(decoder_class, pieces):
    out, finished, error = [], [], None
    decoder = decoder_class(out.append, finished.append)
    try:
        for piece in pieces:
            decoder.dataReceived(piece)
        if not finished:
            decoder.noMoreData()
    except Exception as e:  # compared by type below
        error = type(e)
    return b"".join(out), finished, error, len(out)


chunk = st.binary(min_size=1, max_size=40)
size_line = st.sampled_from(["{:x}", "{:X}", "{:04x}", "{:x};ext=1", "{:x} ", "+{:x}", "{:x}_"])
corrupt = st.sampled_from([None, None, None, "crlf", "size", "short"])


@st.composite
def bodies(draw):
    out = b""
    for data in draw(st.lists(chunk, max_size=30)):
        line = draw(size_line).format(len(data)).encode()
        out += line + b"\r\n" + data + b"\r\n"
    what = draw(corrupt)
    if what == "crlf":
        out = out[:-2] + b"XX" if out else b"1\r\naXX"
    elif what == "size":
        out += b"zz\r\n"
    if what != "short":
        out += b"0\r\n" + draw(st.sampled_from([b"", b"X-Trailer: 1\r\n"])) + b"\r\n"
        out += draw(st.sampled_from([b"", b"HTTP/1.1 200 OK\r\n"]))  # what follows the body
    return out


@settings(max_examples=int(os.environ.get("SHARDSTREAM_CHUNKED_EXAMPLES", "400")), deadline=None)
@given(bodies(), st.lists(st.integers(min_value=0, max_value=2000), max_size=12))
def test_same_bytes_end_and_errors_as_twisted(body, cuts):
    cuts = sorted({c % (len(body) + 1) for c in cuts})
    pieces = [body[a:b] for a, b in zip([0] + cuts, cuts + [len(body)])]
    ours = run(CoalescingChunkedDecoder, pieces)
    theirs = run(http._ChunkedTransferDecoder, pieces)
    assert ours[:3] == theirs[:3]
    assert ours[3] <= max(theirs[3], len(pieces))  # and in fewer pieces, never more than reads


def test_a_read_of_many_chunks_is_one_piece():
    body = b"".join(b"%x\r\n%s\r\n" % (len(d), d) for d in [b"a" * 5, b"b" * 17, b"c"])
    data, finished, error, count = run(CoalescingChunkedDecoder, [body + b"0\r\n\r\n"])
    assert (data, finished, error, count) == (b"aaaaa" + b"b" * 17 + b"c", [b""], None, 1)


def test_installed_into_twisteds_client_when_the_service_starts():
    from shardstream.daemon.startup import prepare_process

    prepare_process()
    assert install()
    assert _newclient.HTTPClientParser._transferDecoders[b"chunked"] is CoalescingChunkedDecoder


def test_a_consumer_that_raises_never_sees_the_body_finish():
    got = []

    def consumer(data):
        got.append(data)
        raise ValueError("bug in the body protocol")

    finished = []
    decoder = CoalescingChunkedDecoder(consumer, finished.append)
    try:
        decoder.dataReceived(b"1\r\na\r\n1\r\nb\r\n0\r\n\r\n")
    except ValueError:
        pass
    assert got and not finished
    try:
        decoder.noMoreData()
    except http._DataLoss:
        pass
    else:
        raise AssertionError("a body whose consumer failed ended as complete")


def test_a_chunk_split_across_reads_does_not_leave_the_fast_path():
    """Twisted's decoder, once a chunk straddles two reads, walks every later
    chunk of the read through its per-chunk states; ours finishes the split
    chunk and takes the rest of the read in its tight loop."""
    walked = []

    class Counting(CoalescingChunkedDecoder):
        def _dataReceived_CHUNK_LENGTH(self):
            walked.append(1)
            return super()._dataReceived_CHUNK_LENGTH()

    chunks = [b"%x\r\n%s\r\n" % (len(d), d) for d in [b"x" * 10] * 20]
    body = b"".join(chunks) + b"0\r\n\r\n"
    for cut in range(1, len(chunks[0]) * 2):  # every place of the first split
        pieces = [body[:cut], body[cut:cut + 75], body[cut + 75:]]
        walked.clear()
        data, finished, error, count = run(Counting, pieces)
        assert (data, finished, error) == (b"x" * 200, [b""], None)
        assert count <= 3, (cut, count)  # one piece per read
        # Twisted's states see only the chunks that straddle a read, and the last.
        assert len(walked) <= 3, (cut, len(walked))
