"""Incremental splitter for a streamed JSON array of objects.

Gemini's `streamGenerateContent` without `?alt=sse` answers with one JSON
array, `[{...},\\r\\n{...}]`, written element by element. To read each element
as it completes, without waiting for the closing bracket, this tracks string,
escape and bracket depth across chunks. It only finds element boundaries; it
does not validate JSON (the caller's `json.loads` does).
"""

from __future__ import annotations

import re

# Outside a string only quotes and brackets matter; inside, quotes and escapes.
# Searching for them lets C code skip the bytes in between.
_STRUCTURAL = re.compile(rb'["{}\[\]]')
_IN_STRING = re.compile(rb'["\\]')
_QUOTE = 0x22
_BACKSLASH = 0x5C
_OPENERS = frozenset(b"{[")

# Depth of the elements' own brackets: the outer array is depth 1.
_ELEMENT_DEPTH = 2


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
        while True:
            if self._in_string:
                m = _IN_STRING.search(buf, pos)
                if m is None:
                    pos = len(buf)
                    break
                if buf[m.start()] == _BACKSLASH:
                    if m.end() >= len(buf):
                        pos = m.start()  # the escaped byte is in the next chunk
                        break
                    pos = m.end() + 1
                    continue
                self._in_string = False
                pos = m.end()
                continue
            m = _STRUCTURAL.search(buf, pos)
            if m is None:
                pos = len(buf)
                break
            pos = m.end()
            byte = buf[m.start()]
            if byte == _QUOTE:
                self._in_string = True
            elif byte in _OPENERS:
                self._depth += 1
                if self._depth == _ELEMENT_DEPTH:
                    self._start = m.start()
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
