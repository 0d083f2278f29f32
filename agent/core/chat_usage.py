"""Metering OpenAI chat streams whose client did not ask for usage.

A streamed chat completion reports usage only when the request sets
`stream_options.include_usage` (Aider, for one, does not). The gateway sets it
upstream so it can meter, and then undoes its two visible effects on the way
back: the extra final chunk with `"choices":[]` and the usage, and the
`"usage":null` member OpenAI adds to every other chunk. The client gets the
bytes OpenAI would have sent without the option. The usage tap is fed the
upstream bytes (before hiding); only the client sees the hider's output.
Use the hider on a 2xx `text/event-stream` answer only: an error body is not
SSE and would be held back until `finish()`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from agent.core.sse import SSESplitter, parse_event

# Exact textual forms only (compact as OpenAI writes it, and the spaced form of
# Python's json.dumps); anything else is passed through untouched.
_NULL_MEMBER = (b'"usage":null', b'"usage": null')
_LEADING = (b',"usage":null', b', "usage": null')
_TRAILING = (b'"usage":null,', b'"usage": null, ')
_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
_EMPTY_CHOICES = re.compile(rb'"choices"\s*:\s*\[\s*\]')


def inject_stream_usage(body: dict[str, Any]) -> bool:
    """Ask upstream for the usage chunk; True when the client had not (so hide it).

    Other `stream_options` the client set (e.g. `include_obfuscation`) are kept.
    A malformed `stream_options` is left for upstream to reject as it would.
    """
    if body.get("stream") is not True:
        return False
    options = body.get("stream_options")
    if options is None:
        body["stream_options"] = {"include_usage": True}
        return True
    if not isinstance(options, dict) or options.get("include_usage") is True:
        return False
    options["include_usage"] = True
    return True


def _is_usage_only(raw: bytes) -> bool:
    """The chunk include_usage adds: `choices` empty and a usage object."""
    if not (_USAGE_OBJECT.search(raw) and _EMPTY_CHOICES.search(raw)):
        return False
    try:
        chunk = json.loads(parse_event(raw).data)
    except (ValueError, RecursionError):
        return False
    return isinstance(chunk, dict) and chunk.get("choices") == [] and isinstance(chunk.get("usage"), dict)


def _without_null_usage(raw: bytes) -> bytes:
    """Remove the one top-level `"usage":null` member; unchanged if unsure.

    A JSON string cannot hold an unescaped quote, so the literal can only be
    a member; more than one means a nested object, and then we leave it.
    """
    if sum(raw.count(form) for form in _NULL_MEMBER) != 1:
        return raw
    for form in _LEADING + _TRAILING:
        if form in raw:
            return raw.replace(form, b"", 1)
    return raw


def hide_usage(raw: bytes) -> bytes:
    """One raw SSE event as the client would have had it without include_usage."""
    if b'"usage"' not in raw:
        return raw
    if _is_usage_only(raw):
        return b""
    return _without_null_usage(raw)


class UsageFrameHider:
    """Rewrite an upstream chat stream for a client that did not ask for usage.

    Works on whole events: a complete event is returned by the `feed` call
    that completes it; only an incomplete trailing event is held back.
    """

    __slots__ = ("_splitter",)

    def __init__(self) -> None:
        self._splitter = SSESplitter()

    def feed(self, data: bytes) -> bytes:
        events = self._splitter.feed(data)
        if not events:
            return b""
        if len(events) == 1:
            return hide_usage(events[0])
        return b"".join(hide_usage(raw) for raw in events)

    def finish(self) -> bytes:
        """The held-back tail at the end of the response (rewritten if whole)."""
        rest = self._splitter.flush()
        return hide_usage(rest) if rest else b""
