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

# One regex pass finds every line end; CRLF must come first so it wins over CR.
_EOL = re.compile(rb"\r\n|\r|\n")
_CR = 0x0D
_LF = 0x0A
_BOM = b"\xef\xbb\xbf"
_NO_CR, _LINE_CR, _EVENT_CR = 0, 1, 2


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

    __slots__ = ("_buf", "_scan", "_line_start", "_cr_ended")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._scan = 0  # where the next search for a line end starts
        self._line_start = 0  # start of the line being read
        # A CR ended the last buffer. If the next byte is LF, it is the rest of
        # that line end (a CRLF split across chunks), not a blank line of its
        # own. _EVENT_CR: the CR also ended an event, which was returned at
        # once; its LF is then returned alone as soon as it comes, because
        # clients that split on "\r\n\r\n" wait for it.
        self._cr_ended = _NO_CR

    def feed(self, data: bytes) -> list[bytes]:
        """Return the raw events that `data` completes, in order."""
        buf = self._buf
        buf += data
        pos = self._scan
        events: list[bytes] = []
        event_start = 0
        if self._cr_ended and pos < len(buf):
            if buf[pos] == _LF:
                pos += 1
                self._line_start = pos
                if self._cr_ended == _EVENT_CR:
                    events.append(bytes(buf[:pos]))
                    event_start = pos
            self._cr_ended = _NO_CR
        end = len(buf)
        while (m := _EOL.search(buf, pos)) is not None:
            blank = m.start() == self._line_start
            pos = m.end()
            self._line_start = pos
            if blank:
                events.append(bytes(buf[event_start:pos]))
                event_start = pos
            if pos == end and buf[pos - 1] == _CR:
                # The CR may be half a CRLF; the line (and event) is over
                # either way, so nothing is held back for it.
                self._cr_ended = _EVENT_CR if blank else _LINE_CR
        if event_start:
            del buf[:event_start]
            pos -= event_start
            self._line_start -= event_start
        self._scan = pos
        return events

    def flush(self) -> bytes:
        """Return the bytes of an unfinished trailing event and start afresh."""
        rest = bytes(self._buf)
        self._buf.clear()
        self._scan = self._line_start = 0
        self._cr_ended = _NO_CR
        return rest


def parse_event(raw: bytes) -> SSEEvent:
    """Read the `event` and `data` fields of one raw event (other fields are ignored)."""
    if raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    name = ""
    data: list[bytes] = []
    for line in _EOL.split(raw):
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
