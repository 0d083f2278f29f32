"""The SSE splitter cuts any chunking of a stream into the same events, byte for byte."""

from __future__ import annotations

import random

import pytest

from agent.core.sse import SSEEvent, SSESplitter, parse_event


def chunkings(data: bytes, seeds: range = range(5)) -> list[list[bytes]]:
    """Whole, byte by byte, and a few seeded random splits."""
    out = [[data], [data[i : i + 1] for i in range(len(data))]]
    for seed in seeds:
        rng = random.Random(seed)
        pieces, i = [], 0
        while i < len(data):
            n = rng.randint(1, 17)
            pieces.append(data[i : i + n])
            i += n
        out.append(pieces)
    return out


def split(chunks: list[bytes]) -> tuple[list[bytes], bytes]:
    splitter = SSESplitter()
    events: list[bytes] = []
    for chunk in chunks:
        events += splitter.feed(chunk)
    return events, splitter.flush()


def decoded(chunks: list[bytes]) -> list[SSEEvent]:
    events, rest = split(chunks)
    parsed = [parse_event(raw) for raw in events]
    return [e for e in parsed if e.data or e.name]


STREAM_LF = (
    b"event: message_start\n"
    b'data: {"type":"message_start"}\n'
    b"\n"
    b": keep-alive comment\n"
    b"\n"
    b"event: ping\n"
    b'data: {"type": "ping"}\n'
    b"\n"
    b"data: first line\n"
    b"data: second line\n"
    b"\n"
)
EXPECTED = [
    SSEEvent("message_start", b'{"type":"message_start"}'),
    SSEEvent("ping", b'{"type": "ping"}'),
    SSEEvent("", b"first line\nsecond line"),
]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_every_line_ending_and_chunking_gives_the_same_events(eol: bytes) -> None:
    stream = STREAM_LF.replace(b"\n", eol)
    for chunks in chunkings(stream):
        assert decoded(chunks) == EXPECTED


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_pieces_partition_the_input(eol: bytes) -> None:
    stream = STREAM_LF.replace(b"\n", eol) + b"data: unfinished"
    for chunks in chunkings(stream):
        events, rest = split(chunks)
        assert b"".join(events) + rest == stream
        assert rest.endswith(b"data: unfinished")


def test_complete_event_is_returned_by_the_chunk_that_completes_it() -> None:
    splitter = SSESplitter()
    assert splitter.feed(b"data: a\n") == []
    assert splitter.feed(b"\ndata: b") == [b"data: a\n\n"]
    assert splitter.feed(b"\n\ndata: c\n\ndata: d\n\n") == [b"data: b\n\n", b"data: c\n\n", b"data: d\n\n"]
    assert splitter.flush() == b""


def test_crlf_split_after_the_last_cr_is_not_held_back() -> None:
    # Gemini ends events with \r\n\r\n; a chunk boundary inside the last CRLF
    # must not delay the event, and the lone LF must not be delayed either.
    splitter = SSESplitter()
    assert splitter.feed(b"data: x\r\n\r") == [b"data: x\r\n\r"]
    assert splitter.feed(b"\n") == [b"\n"]
    assert splitter.feed(b"data: y\r\n\r\n") == [b"data: y\r\n\r\n"]


def test_cr_at_a_chunk_end_inside_an_event() -> None:
    splitter = SSESplitter()
    assert splitter.feed(b"data: x\r") == []
    assert splitter.feed(b"\ndata: y\r") == []
    assert splitter.feed(b"\r") == [b"data: x\r\ndata: y\r\r"]
    assert parse_event(b"data: x\r\ndata: y\r\r").data == b"x\ny"


def test_mixed_line_endings() -> None:
    stream = b"data: a\r\n\ndata: b\n\r\ndata: c\r\r\n"
    for chunks in chunkings(stream):
        assert [e.data for e in decoded(chunks)] == [b"a", b"b", b"c"]


def test_parse_event_field_rules() -> None:
    raw = b"\xef\xbb\xbfevent:named\ndata:no-space\ndata:  two-spaces\nid: 7\nretry: 10\n: comment\ndata\n\n"
    assert parse_event(raw) == SSEEvent("named", b"no-space\n two-spaces\n")


def test_parse_event_without_data() -> None:
    assert parse_event(b": just a comment\n\n") == SSEEvent("", b"")
    assert parse_event(b"\n") == SSEEvent("", b"")
    assert parse_event(b"") == SSEEvent("", b"")


def test_garbage_never_raises() -> None:
    html = b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n\r\n<body>\xff\xfe</body></html>"
    for chunks in chunkings(html):
        events, rest = split(chunks)
        assert b"".join(events) + rest == html
        for raw in events:
            parse_event(raw)


def test_memory_holds_only_the_open_event() -> None:
    splitter = SSESplitter()
    for _ in range(1000):
        splitter.feed(b'data: {"x": 1}\n\n')
    splitter.feed(b"data: open")
    assert splitter.flush() == b"data: open"


def test_line_ends_changing_mid_stream() -> None:
    # LF-only so far (the fast path), then a relay starts writing CRs.
    stream = b"data: a\n\ndata: b\n\r\ndata: c\r\n\ndata: d\r\r\n: x\n\n"
    for chunks in chunkings(stream):
        events, rest = split(chunks)
        assert b"".join(events) + rest == stream
        assert [e.data for e in decoded(chunks)] == [b"a", b"b", b"c", b"d"]
