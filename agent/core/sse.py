"""Incremental server-sent-events framing, for observers of a byte stream.

The gateway sees a response as arbitrary chunks: an event may be split across
chunks, or several may arrive in one. `SSESplitter` cuts the stream into whole
raw events without touching a byte, so a caller can forward them unchanged
(the concatenation of everything it returns plus `flush()` is the input), and
`parse_event` reads the fields of one raw event, following the WHATWG
event-stream rules: lines end in CRLF, LF or CR, a blank line ends an event,
`:` starts a comment, `data:` lines join with LF, one space after the colon is
dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Line ends: CRLF must come first so it wins over CR.
_EOL = re.compile(rb"\r\n|\r|\n")
_CR = 0x0D
_LF = 0x0A
_BOM = b"\xef\xbb\xbf"
_NO_CR, _EVENT_CR = 0, 1


@dataclass(frozen=True, slots=True)
class SSEEvent:
    name: str  # the `event:` field, "" when absent (the spec's default "message")
    data: bytes  # `data:` lines joined with LF; b"" when the event carried none


class SSESplitter:
    """Cut a byte stream into whole raw events, each ending with its blank line.

    Each chunk is scanned once (the scan position survives between calls) and
    only the incomplete trailing event is kept, so the cost is linear in the
    stream whatever the chunking. The pieces returned partition the input; one
    may be a lone b"\n" (the second half of a CRLF that ended an event in the
    previous chunk), which parses as an empty event.
    """

    __slots__ = ("_buf", "_scan", "_cr_ended", "_lf_only")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._scan = 0  # where the next search starts; nothing before it is looked at again
        # _EVENT_CR: a CR at the end of the last buffer ended an event, which
        # was returned at once. If the next byte is LF it completes that CRLF:
        # it is returned alone as soon as it comes (clients that split on
        # "\r\n\r\n" wait for it) and does not start a blank line of its own.
        self._cr_ended = _NO_CR
        # Until a CR shows up (Anthropic and OpenAI never send one), a blank
        # line is just b"\n\n" and bytes.find beats any regex several times.
        self._lf_only = True

    def feed(self, data: bytes) -> list[bytes]:
        """Return the raw events that `data` completes, in order."""
        buf = self._buf
        buf += data
        if self._lf_only and b"\r" in data:
            self._lf_only = False
        events: list[bytes] = []
        if self._lf_only:
            event_start = self._cut_lf(events)
        else:
            event_start = self._cut_any(events)
        if event_start:
            del buf[:event_start]
            self._scan -= event_start
        return events

    def _cut_lf(self, events: list[bytes]) -> int:
        buf, pos, start = self._buf, self._scan, 0
        while (i := buf.find(b"\n\n", pos)) >= 0:
            pos = i + 2
            events.append(bytes(buf[start:pos]))
            start = pos
        # A b"\n\n" may straddle this chunk and the next.
        self._scan = max(pos, len(buf) - 1)
        return start

    def _cut_any(self, events: list[bytes]) -> int:
        buf, pos, start, end = self._buf, self._scan, 0, len(self._buf)
        if self._cr_ended and pos < end:
            if buf[pos] == _LF:
                pos += 1
                events.append(bytes(buf[:pos]))
                start = pos
            self._cr_ended = _NO_CR
        # A blank line is a line end directly followed by another one.
        while (m := _EOL.search(buf, pos)) is not None:
            after = m.end()
            if after == end:
                pos = m.start()  # look again once the next byte is here
                break
            pos = after
            if buf[after] == _LF:
                pos = after + 1
            elif buf[after] == _CR:
                pos = after + 1
                if pos == end:
                    # Half a CRLF maybe, but the event is over either way:
                    # nothing is held back for it.
                    self._cr_ended = _EVENT_CR
                elif buf[pos] == _LF:
                    pos += 1
            else:
                continue
            events.append(bytes(buf[start:pos]))
            start = pos
        else:
            pos = end
        self._scan = pos
        return start

    def flush(self) -> bytes:
        """Return the bytes of an unfinished trailing event and start afresh."""
        rest = bytes(self._buf)
        self._buf.clear()
        self._scan = 0
        self._cr_ended = _NO_CR
        self._lf_only = True
        return rest


def parse_event(raw: bytes) -> SSEEvent:
    """Read the `event` and `data` fields of one raw event (other fields are ignored)."""
    if raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    name = ""
    data: list[bytes] = []
    # Most events are LF-only; bytes.split is much cheaper than the regex.
    lines = _EOL.split(raw) if b"\r" in raw else raw.split(b"\n")
    for line in lines:
        if not line or line[0] == 0x3A:  # blank line, or a ":" comment
            continue
        field, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            name = value.decode("utf-8", "replace")
    return SSEEvent(name, b"\n".join(data))
