"""Response taps: read a copy of a model response and tell what the call used.

The meter forwards every response chunk to the client untouched and feeds a
copy to a tap; when the response ends, `finish()` gives one `Usage` in the
convention of `agent.core.usage`. A tap is an observer: it never raises on
what it is fed (HTML error pages, truncated JSON, an empty body), it keeps
at most one incomplete event or the bounded non-stream body in memory, and it
only `json.loads` the few events that can carry the model, the stop reason,
usage or an error. The framing (SSE, JSON array, or one JSON body) is read
from the body's first byte, because a streaming request can be answered with
a plain JSON error.
"""

from __future__ import annotations

import enum
import json
import logging
import re
from collections.abc import Callable
from typing import Any, Protocol

from agent.core.dialects import Dialect
from agent.core.jsonarray import JSONArraySplitter
from agent.core.sse import SSESplitter, parse_event
from agent.core.usage import Usage

_log = logging.getLogger(__name__)

# A non-stream body larger than this is not kept: no model answer is this big,
# and an observer must not let a runaway body eat the laptop's memory.
MAX_BODY_BYTES = 32 * 1024 * 1024


class _Reader(Protocol):
    """Per-dialect knowledge: which events matter and what they mean."""

    def event(self, name: str, data: bytes) -> None:
        """One SSE event's `event:` name and data, or one JSON-array element."""

    def body(self, obj: Any) -> None:
        """A whole (non-stream) JSON response body."""

    def result(self) -> Any: ...  # a Usage for the usage taps


class _Framing(enum.Enum):
    UNKNOWN = "unknown"
    SSE = "sse"
    ARRAY = "array"  # Gemini streamGenerateContent without ?alt=sse
    JSON = "json"


def _sniff(first: int) -> _Framing:
    if first == ord("{"):
        return _Framing.JSON
    if first == ord("["):
        return _Framing.ARRAY
    return _Framing.SSE  # event-stream fields, a ":" comment, or garbage


class Tap:
    """Feed it the response bytes as they pass; `finish()` when the response ends."""

    __slots__ = ("_reader", "_framing", "_sse", "_array", "_chunks", "_size", "_failed", "_empty", "streaming")

    def __init__(self, reader: _Reader, streaming: bool, empty: Callable[[], Any] = Usage) -> None:
        self._reader = reader
        self._empty = empty  # what finish() gives when the reader failed
        self.streaming = streaming  # what the request asked for; the body decides framing
        self._framing = _Framing.UNKNOWN
        self._sse: SSESplitter | None = None
        self._array: JSONArraySplitter | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._failed = False

    def feed(self, data: bytes) -> None:
        if self._failed or not data:
            return
        try:
            self._feed(data)
        except Exception:
            # Observing must never break the stream being observed: a bug here
            # costs the metering of this one call (finish() says reported=False).
            _log.exception("usage tap failed; the call is left unmetered")
            self._failed = True

    def finish(self) -> Usage:
        """Usage seen so far; safe to call on a truncated or garbled response."""
        if self._failed:
            return self._empty()
        try:
            self._finish()
            return self._reader.result()
        except Exception:
            _log.exception("usage tap failed at the end of the response")
            self._failed = True
            return self._empty()

    def _feed(self, data: bytes) -> None:
        if self._framing is _Framing.UNKNOWN:
            data = data.lstrip()
            if data.startswith(b"\xef\xbb\xbf"):
                data = data[3:].lstrip()
            if not data:
                return
            self._framing = _sniff(data[0])
            self._sse = SSESplitter() if self._framing is _Framing.SSE else None
            self._array = JSONArraySplitter() if self._framing is _Framing.ARRAY else None
        if self._sse is not None:
            for raw in self._sse.feed(data):
                self._sse_event(raw)
        elif self._array is not None:
            for element in self._array.feed(data):
                self._reader.event("", element)
        elif self._size <= MAX_BODY_BYTES:
            self._chunks.append(data)  # joined once at the end, never per chunk
            self._size += len(data)

    def _sse_event(self, raw: bytes) -> None:
        event = parse_event(raw)
        if event.data:
            self._reader.event(event.name, event.data)

    def _finish(self) -> None:
        if self._sse is not None:
            # Lenient where the spec discards: a last event whose blank line
            # never came is still whole if its JSON is (json.loads decides).
            rest = self._sse.flush()
            if rest:
                self._sse_event(rest)
        elif self._framing is _Framing.JSON and self._size <= MAX_BODY_BYTES:
            body = b"".join(self._chunks)
            self._chunks = []
            obj = loads(body)
            if obj is not None:
                self._reader.body(obj)


def make_tap(dialect: Dialect, streaming: bool) -> Tap:
    """A fresh tap for one response of `dialect`."""
    return Tap(_READERS[dialect](), streaming)


# --- small, total helpers: provider JSON is input we do not trust ---------------


def loads(data: bytes) -> Any:
    """Parsed JSON, or None for anything that is not."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int | None:
    """A token count, or None when absent or not a count."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _int(value: Any) -> int:
    return _count(value) or 0


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _error_code(error: Any) -> str | None:
    """`error` objects name themselves by `code` (OpenAI), `status` (Google)
    or `type` (Anthropic, OpenAI); take the most specific one present."""
    err = _dict(error)
    for key in ("code", "status", "type"):
        value = err.get(key)
        if isinstance(value, str) and value:
            return value
    code = err.get("code")
    if isinstance(code, int) and not isinstance(code, bool):
        return str(code)
    return "error" if error else None


class _Lazy:
    """Parse a kept raw event once, when (and if) the result is asked for."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[int, dict[str, Any]] = {}

    def __call__(self, raw: bytes | None) -> dict[str, Any]:
        if raw is None:
            return {}
        key = id(raw)
        if key not in self._cache:
            self._cache[key] = _dict(loads(raw))
        return self._cache[key]


# --- Anthropic Messages ---------------------------------------------------------

_ANTHROPIC_EVENTS = frozenset({"message_start", "message_delta", "error"})
# The bulk of a stream; named so they are skipped without a look at the data.
_ANTHROPIC_SKIP = frozenset({"content_block_start", "content_block_delta", "content_block_stop", "ping", "message_stop"})
# Without `event:` names (some relays drop them) fall back to the data's type.
# A JSON string cannot hold an unescaped quote, so this only matches structure.
_ANTHROPIC_TYPES = re.compile(rb'"type"\s*:\s*"(?:message_start|message_delta|error)"')


class _AnthropicReader:
    __slots__ = ("_fields", "_breakdown", "_thinking", "_model", "_stop", "_error", "_reported")

    def __init__(self) -> None:
        # Anthropic's usage keys as last reported; message_delta counts are
        # cumulative, so a later value replaces an earlier one.
        self._fields: dict[str, int] = {}
        self._breakdown: tuple[int, int] | None = None  # cache writes (5 m, 1 h)
        self._thinking = 0
        self._model: str | None = None
        self._stop: str | None = None
        self._error: str | None = None
        self._reported = False

    def event(self, name: str, data: bytes) -> None:
        if name in _ANTHROPIC_SKIP:
            return
        if name not in _ANTHROPIC_EVENTS and not _ANTHROPIC_TYPES.search(data):
            return
        obj = _dict(loads(data))
        kind = obj.get("type") or name
        if kind == "message_start":
            message = _dict(obj.get("message"))
            self._model = _str(message.get("model")) or self._model
            self._usage(message.get("usage"))
        elif kind == "message_delta":
            self._stop = _str(_dict(obj.get("delta")).get("stop_reason")) or self._stop
            if isinstance(obj.get("usage"), dict):
                self._usage(obj["usage"])
                self._reported = True
        elif kind == "error":
            self._error = _error_code(obj.get("error")) or "error"

    def body(self, obj: Any) -> None:
        msg = _dict(obj)
        if msg.get("type") == "error":
            self._error = _error_code(msg.get("error")) or "error"
            return
        self._model = _str(msg.get("model"))
        self._stop = _str(msg.get("stop_reason"))
        if isinstance(msg.get("usage"), dict):
            self._usage(msg["usage"])
            self._reported = True

    def _usage(self, usage: Any) -> None:
        u = _dict(usage)
        for key in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
            n = _count(u.get(key))
            if n is not None:
                self._fields[key] = n
        created = u.get("cache_creation")
        if isinstance(created, dict):
            self._breakdown = (
                _int(created.get("ephemeral_5m_input_tokens")),
                _int(created.get("ephemeral_1h_input_tokens")),
            )
        thinking = _count(_dict(u.get("output_tokens_details")).get("thinking_tokens"))
        if thinking is not None:
            self._thinking = thinking

    def result(self) -> Usage:
        f = self._fields
        written = f.get("cache_creation_input_tokens", 0)
        w5m, w1h = self._breakdown or (written, 0)
        # A total above its breakdown (a later delta updated only the total)
        # is billed as the default 5 m write.
        w5m += max(written - w5m - w1h, 0)
        return Usage(
            input_tokens=f.get("input_tokens", 0),
            output_tokens=f.get("output_tokens", 0),
            cache_read_tokens=f.get("cache_read_input_tokens", 0),
            cache_write_5m_tokens=w5m,
            cache_write_1h_tokens=w1h,
            reasoning_tokens=self._thinking,
            model=self._model,
            stop_reason=self._stop,
            reported=self._reported,
            error=self._error,
        )


# --- OpenAI Chat Completions -----------------------------------------------------

# Every chunk carries the model and, with include_usage, `"usage":null`; only
# a usage *object*, a non-null finish_reason or an error object is worth
# parsing, and of each only the last one, at the end.
_CHAT_USAGE = re.compile(rb'"usage"\s*:\s*\{')
_CHAT_FINISH = re.compile(rb'"finish_reason"\s*:\s*"')
_ERROR_OBJECT = re.compile(rb'"error"\s*:\s*\{')


def _openai_usage(usage: dict[str, Any], prompt: str, output: str) -> Usage:
    """Chat (`prompt_tokens`/`completion_tokens`) and Responses (`input_tokens`/`output_tokens`)
    report alike: the prompt count includes cached and cache-written tokens."""
    details = _dict(usage.get(f"{prompt}_details"))
    cached = _int(details.get("cached_tokens"))
    written = _int(details.get("cache_write_tokens"))
    return Usage(
        input_tokens=max(_int(usage.get(prompt)) - cached - written, 0),
        output_tokens=_int(usage.get(output)),
        cache_read_tokens=cached,
        cache_write_5m_tokens=written,
        reasoning_tokens=_int(_dict(usage.get(f"{output}_details")).get("reasoning_tokens")),
        reported=True,
    )


def _chat_usage(usage: dict[str, Any]) -> Usage:
    return _openai_usage(usage, "prompt_tokens", "completion_tokens")


def _finish_reason(choices: Any) -> str | None:
    reason = None
    for choice in choices if isinstance(choices, list) else ():
        reason = _str(_dict(choice).get("finish_reason")) or reason
    return reason


class _ChatReader:
    __slots__ = ("_first", "_usage", "_finish", "_error", "_body")

    def __init__(self) -> None:
        self._first: bytes | None = None
        self._usage: bytes | None = None
        self._finish: bytes | None = None
        self._error: bytes | None = None
        self._body: dict[str, Any] | None = None

    def event(self, name: str, data: bytes) -> None:
        if data == b"[DONE]":
            return
        if self._first is None:
            self._first = data
        # Substring tests first: they run in C and settle the common chunk.
        if b'"usage"' in data and b'"usage":null' not in data and _CHAT_USAGE.search(data):
            self._usage = data
        if b'"finish_reason":"' in data or (b'"finish_reason":null' not in data and _CHAT_FINISH.search(data)):
            self._finish = data
        if name == "error" or (b'"error"' in data and _ERROR_OBJECT.search(data)):
            self._error = data

    def body(self, obj: Any) -> None:
        self._body = _dict(obj)

    def result(self) -> Usage:
        if self._body is not None:
            return self._chunks_to_usage(self._body, self._body, self._body, self._body)
        lazy = _Lazy()
        return self._chunks_to_usage(lazy(self._first), lazy(self._usage), lazy(self._finish), lazy(self._error))

    @staticmethod
    def _chunks_to_usage(
        first: dict[str, Any], usage: dict[str, Any], finish: dict[str, Any], error: dict[str, Any]
    ) -> Usage:
        u = _chat_usage(usage["usage"]) if isinstance(usage.get("usage"), dict) else Usage()
        u.model = _str(usage.get("model")) or _str(first.get("model"))
        u.stop_reason = _finish_reason(finish.get("choices"))
        u.error = _error_code(error.get("error"))
        return u


# --- OpenAI Responses -------------------------------------------------------------

_RESPONSES_START = frozenset({"response.created", "response.in_progress"})
_RESPONSES_END = frozenset({"response.completed", "response.incomplete", "response.failed"})
_RESPONSES_TYPE = re.compile(
    rb'"type"\s*:\s*"(response\.(?:created|in_progress|completed|incomplete|failed)|error)"'
)


def _responses_usage(usage: dict[str, Any]) -> Usage:
    return _openai_usage(usage, "input_tokens", "output_tokens")


def _response_to_usage(resp: dict[str, Any]) -> Usage:
    u = _responses_usage(resp["usage"]) if isinstance(resp.get("usage"), dict) else Usage()
    u.model = _str(resp.get("model"))
    u.stop_reason = _str(_dict(resp.get("incomplete_details")).get("reason")) or _str(resp.get("status"))
    u.error = _error_code(resp.get("error"))
    return u


class _ResponsesReader:
    __slots__ = ("_start", "_end", "_error", "_body")

    def __init__(self) -> None:
        self._start: bytes | None = None  # for the model when the stream is cut short
        self._end: bytes | None = None
        self._error: bytes | None = None
        self._body: dict[str, Any] | None = None

    def event(self, name: str, data: bytes) -> None:
        if not name.startswith("response.") and name != "error":
            # No (or a relay's own) event name: the data's type says.
            m = _RESPONSES_TYPE.search(data)
            if m is None:
                return
            name = m[1].decode()
        if name in _RESPONSES_END:
            self._end = data
        elif name in _RESPONSES_START:
            self._start = self._start or data
        elif name == "error":
            self._error = data

    def body(self, obj: Any) -> None:
        self._body = _dict(obj)

    def result(self) -> Usage:
        if self._body is not None:
            return _response_to_usage(self._body)
        lazy = _Lazy()
        u = _response_to_usage(_dict(lazy(self._end).get("response")))
        if self._end is None:
            u.model = _str(_dict(lazy(self._start).get("response")).get("model"))
        if self._error is not None:
            event = lazy(self._error)
            u.error = _error_code(event.get("error") or event) or u.error
        return u


# --- Gemini -------------------------------------------------------------------------

# Each streamed chunk is a whole GenerateContentResponse whose usageMetadata
# is cumulative, so only the last one counts; keep raw bytes, parse at the end.
_GEMINI_USAGE = re.compile(rb'"usageMetadata"\s*:\s*\{')
_GEMINI_FINAL = re.compile(rb'"(?:finishReason|blockReason)"\s*:\s*"')
_GEMINI_ERROR = re.compile(rb'^\s*\{\s*"error"\s*:')


def _gemini_usage(meta: dict[str, Any]) -> Usage:
    cached = _int(meta.get("cachedContentTokenCount"))
    thoughts = _int(meta.get("thoughtsTokenCount"))
    return Usage(
        # promptTokenCount includes the cached part; tool-use prompt tokens
        # (search, code execution results) are billed as input on top.
        input_tokens=max(_int(meta.get("promptTokenCount")) - cached, 0) + _int(meta.get("toolUsePromptTokenCount")),
        output_tokens=_int(meta.get("candidatesTokenCount")) + thoughts,
        cache_read_tokens=cached,
        reasoning_tokens=thoughts,
        reported=True,
    )


def _gemini_stop(chunk: dict[str, Any]) -> str | None:
    stop = None
    candidates = chunk.get("candidates")
    for candidate in candidates if isinstance(candidates, list) else ():
        stop = _str(_dict(candidate).get("finishReason")) or stop
    return stop or _str(_dict(chunk.get("promptFeedback")).get("blockReason"))


class _GeminiReader:
    __slots__ = ("_n", "_first", "_usage", "_usage_at", "_final", "_final_at", "_error", "_body")

    def __init__(self) -> None:
        self._n = 0
        self._first: bytes | None = None
        self._usage: bytes | None = None
        self._usage_at = -1
        self._final: bytes | None = None
        self._final_at = -1
        self._error: bytes | None = None
        self._body: dict[str, Any] | None = None

    def event(self, name: str, data: bytes) -> None:
        self._n += 1
        if self._first is None:
            self._first = data
        if _GEMINI_USAGE.search(data):
            self._usage, self._usage_at = data, self._n
        if _GEMINI_FINAL.search(data):
            self._final, self._final_at = data, self._n
        if _GEMINI_ERROR.match(data):
            self._error = data

    def body(self, obj: Any) -> None:
        self._body = _dict(obj)

    def result(self) -> Usage:
        if self._body is not None:
            body = self._body
            u = _gemini_usage(body["usageMetadata"]) if isinstance(body.get("usageMetadata"), dict) else Usage()
            u.model = _str(body.get("modelVersion"))
            u.stop_reason = _gemini_stop(body)
            u.error = _error_code(body.get("error"))
            return u
        lazy = _Lazy()
        last = lazy(self._usage)
        u = _gemini_usage(last["usageMetadata"]) if isinstance(last.get("usageMetadata"), dict) else Usage()
        # Usage is final only once the chunk with the finish reason has come.
        u.reported = u.reported and 0 <= self._final_at <= self._usage_at
        u.model = _str(last.get("modelVersion")) or _str(lazy(self._first).get("modelVersion"))
        u.stop_reason = _gemini_stop(lazy(self._final))
        u.error = _error_code(lazy(self._error).get("error"))
        return u


_READERS: dict[Dialect, type[_Reader]] = {
    Dialect.ANTHROPIC: _AnthropicReader,
    Dialect.OPENAI_CHAT: _ChatReader,
    Dialect.OPENAI_RESPONSES: _ResponsesReader,
    Dialect.GEMINI: _GeminiReader,
}
