"""Incremental splitter for a streamed JSON array of objects.

Gemini's `streamGenerateContent` without `?alt=sse` answers with one JSON
array, `[{...},\\r\\n{...}]`, written element by element. To read each element
as it completes, without waiting for the closing bracket, this tracks string,
escape and bracket depth across chunks. It only finds element boundaries; it
does not validate JSON (the caller's `json.loads` does).
"""

from __future__ import annotations

import re

# Outside a string, skip in one C-level match everything up to the next bracket,
# whole strings included (possessive, so an unclosed string cannot backtrack).
_SKIP = re.compile(rb'(?:[^"{}\[\]]++|"(?:[^"\\]++|\\.)*+")*+', re.DOTALL)
# Inside a string that a chunk boundary cut: its rest, up to the closing quote.
_STRING_REST = re.compile(rb'(?:[^"\\]++|\\.)*+', re.DOTALL)
_QUOTE = 0x22
_OPENERS = frozenset(b"{[")

# Depth of the elements' own brackets: the outer array is depth 1.
_ELEMENT_DEPTH = 2


def _match_end(pattern: re.Pattern[bytes], buf: bytearray, pos: int) -> int:
    m = pattern.match(buf, pos)  # both patterns also match the empty string
    return m.end() if m else pos


class JSONArraySplitter:
    """Feed chunks of `[elem, elem, ...]`, get each object or array element's bytes."""

    __slots__ = ("_buf", "_pos", "_depth", "_in_string", "_start")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._depth = 0
        self._in_string = False
        self._start = -1  # offset of the open element's first byte, -1 between elements

    def feed(self, data: bytes) -> list[bytes]:
        """Return the elements that `data` completes, in order."""
        buf = self._buf
        buf += data
        pos = self._pos
        out: list[bytes] = []
        end = len(buf)
        while True:
            if self._in_string:
                pos = _match_end(_STRING_REST, buf, pos)
                if pos >= end or buf[pos] != _QUOTE:
                    break  # the string (or an escape) goes on in the next chunk
                pos += 1
                self._in_string = False
            pos = _match_end(_SKIP, buf, pos)
            if pos >= end:
                break
            byte = buf[pos]
            pos += 1
            if byte == _QUOTE:
                self._in_string = True  # a string the buffer does not close yet
            elif byte in _OPENERS:
                self._depth += 1
                if self._depth == _ELEMENT_DEPTH:
                    self._start = pos - 1
            else:
                self._depth = max(self._depth - 1, 0)  # a stray closer is garbage, not a crash
                if self._depth == _ELEMENT_DEPTH - 1 and self._start >= 0:
                    out.append(bytes(buf[self._start : pos]))
                    self._start = -1
        # Keep only the open element (or nothing), so memory is one element.
        keep = self._start if self._start >= 0 else pos
        if keep:
            del buf[:keep]
            pos -= keep
            if self._start >= 0:
                self._start = 0
        self._pos = pos
        return out

    def pending(self) -> bytes:
        """The bytes of an element that has not closed yet (for a truncated stream)."""
        return bytes(self._buf) if self._start >= 0 else b""
