"""Keep a model's call of a denied tool from ever reaching the client.

The request side strips or refuses denied tools, but a model can still call
one (history reintroduced it, or the client declared it under a tool the
policy did not see). So the response is checked too, without trusting the
client:

- streamed: `ToolCallGuard` forwards whole events byte for byte and holds back
  only an incomplete trailing event. At the first event that opens a call of a
  denied tool it emits the dialect's own terminal error event *instead of*
  that event, and swallows everything after it.
- not streamed: `denied_tool_calls` lists the denied calls in a JSON body; the
  gateway then answers 403 `policy_violation` instead of the body.

Call names, as `policy.tool_denier` expects them: the tool's name; a Responses
namespaced call `<namespace>.<name>`; an MCP call made by the provider
(Anthropic `mcp_tool_use`, Responses `mcp_call`) `mcp__<server>__<name>`, the
same spelling as Claude Code's own MCP tools.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from agent.core.dialects import Dialect
from agent.core.jsonarray import JSONArraySplitter
from agent.core.sse import SSESplitter, parse_event

__all__ = ["ToolCallGuard", "called_tools", "denied_tool_calls", "policy_message"]

_ANTHROPIC_CALLS = ("tool_use", "server_tool_use", "mcp_tool_use")
_RESPONSES_CALLS = ("function_call", "custom_tool_call", "mcp_call")
# Only events containing one of these can open a tool call; the rest are
# forwarded without a JSON parse, which keeps the guard off the hot path.
_MARKERS: dict[Dialect, tuple[bytes, ...]] = {
    Dialect.ANTHROPIC: (b"content_block_start", b"message_start"),
    Dialect.OPENAI_CHAT: (b"tool_calls", b"function_call"),
    Dialect.OPENAI_RESPONSES: (b"response.output_item.",),
    Dialect.GEMINI: (b"functionCall",),
}


def policy_message(name: str) -> str:
    return f'tool "{name}" is blocked by policy'


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _anthropic_calls(obj: dict[str, Any]) -> list[str]:
    kind = obj.get("type")
    if kind == "content_block_start":
        blocks = [obj.get("content_block")]
    elif kind == "message_start":
        blocks = _list(_dict(obj.get("message")).get("content"))
    else:  # a whole (non-streamed) message
        blocks = _list(obj.get("content"))
    names = []
    for block in map(_dict, blocks):
        name = block.get("name")
        if block.get("type") in _ANTHROPIC_CALLS and isinstance(name, str):
            server = block.get("server_name")
            names.append(f"mcp__{server}__{name}" if block["type"] == "mcp_tool_use" and server else name)
    return names


def _chat_calls(obj: dict[str, Any]) -> list[str]:
    names = []
    for choice in map(_dict, _list(obj.get("choices"))):
        message = _dict(choice.get("delta") or choice.get("message"))
        for call in map(_dict, _list(message.get("tool_calls"))):
            name = _dict(call.get("function") or call.get("custom")).get("name")
            if isinstance(name, str) and name:  # only the first delta of a call names it
                names.append(name)
        legacy = _dict(message.get("function_call")).get("name")
        if isinstance(legacy, str) and legacy:
            names.append(legacy)
    return names


def _responses_calls(obj: dict[str, Any]) -> list[str]:
    kind = str(obj.get("type", ""))
    if kind.startswith("response.output_item."):
        items = [obj.get("item")]
    elif kind.startswith("response."):
        return []  # other events repeat items already judged when they were added
    else:  # a whole (non-streamed) response object
        items = _list(obj.get("output"))
    names = []
    for item in map(_dict, items):
        name = item.get("name")
        if item.get("type") not in _RESPONSES_CALLS or not isinstance(name, str):
            continue
        if item["type"] == "mcp_call":
            name = f"mcp__{item.get('server_label')}__{name}"
        elif item.get("namespace"):
            name = f"{item['namespace']}.{name}"
        names.append(name)
    return names


def _gemini_calls(obj: Any) -> list[str]:
    chunks = obj if isinstance(obj, list) else [obj]  # a non-SSE stream is one JSON array
    names = []
    for chunk in map(_dict, chunks):
        for candidate in map(_dict, _list(chunk.get("candidates"))):
            for part in map(_dict, _list(_dict(candidate.get("content")).get("parts"))):
                name = _dict(part.get("functionCall")).get("name")
                if isinstance(name, str):
                    names.append(name)
    return names


_CALLS: dict[Dialect, Callable[[Any], list[str]]] = {
    Dialect.ANTHROPIC: _anthropic_calls,
    Dialect.OPENAI_CHAT: _chat_calls,
    Dialect.OPENAI_RESPONSES: _responses_calls,
    Dialect.GEMINI: _gemini_calls,
}


def called_tools(dialect: Dialect, obj: Any) -> list[str]:
    """Tool calls opened by one stream event's data, or in a whole response body."""
    return _CALLS[dialect](obj) if isinstance(obj, (dict, list)) else []


def denied_tool_calls(dialect: Dialect, body: Any, is_denied: Callable[[str], bool]) -> list[str]:
    """Denied tool calls in a non-streamed response body, in order, each once."""
    return list(dict.fromkeys(n for n in called_tools(dialect, body) if is_denied(n)))


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class ToolCallGuard:
    """Streaming filter: `feed(chunk)` → bytes safe to forward now; `finish()` → the rest.

    `denied` is the name of the call that ended the stream, None while it runs clean.
    """

    def __init__(self, dialect: Dialect, is_denied: Callable[[str], bool]) -> None:
        self.dialect = dialect
        self.is_denied = is_denied
        self.denied: str | None = None
        self._markers = _MARKERS[dialect]
        self._sse = SSESplitter()
        self._array: JSONArraySplitter | None = None  # Gemini without ?alt=sse
        self._undecided = dialect is Dialect.GEMINI  # until the first non-blank byte
        self._held = bytearray()  # array mode: fed bytes not yet forwarded
        self._eol = b"\n"
        self._events_passed = 0  # Responses: sequence_number of the next event
        self._response: dict[str, Any] = {}

    def feed(self, data: bytes) -> bytes:
        if self.denied is not None:
            return b""
        if self._undecided:
            self._held += data
            if not self._held.strip():
                return b""
            self._undecided = False
            data = bytes(self._held)
            self._held.clear()
            if data.lstrip()[:1] == b"[":
                self._array = JSONArraySplitter()
        if self._array is not None:
            return self._feed_array(data)
        out = bytearray()
        for raw in self._sse.feed(data):
            if self._check_event(raw):
                return bytes(out + self._terminal())
            out += raw
        return bytes(out)

    def finish(self) -> bytes:
        if self.denied is not None:
            return b""
        if self._array is not None or self._undecided:
            rest = bytes(self._held)
            self._held.clear()
            return rest
        rest = self._sse.flush()
        if rest and self._check_event(rest):
            return self._terminal()
        return rest

    def _check_event(self, raw: bytes) -> bool:
        """True when `raw` opens a denied call (and records it); tracks stream state."""
        if not self._events_passed and b"\r\n" in raw:
            self._eol = b"\r\n"  # answer in the stream's own line ending (Gemini uses CRLF)
        if self.dialect is Dialect.OPENAI_RESPONSES and not self._response and b"response.created" in raw:
            self._response = _dict(_dict(self._load(raw)).get("response"))
        if any(m in raw for m in self._markers):
            for name in called_tools(self.dialect, self._load(raw)):
                if self.is_denied(name):
                    self.denied = name
                    return True
        if raw.strip():  # a stray line end left over from a split CRLF is not an event
            self._events_passed += 1
        return False

    @staticmethod
    def _load(raw: bytes) -> Any:
        data = parse_event(raw).data
        try:
            return json.loads(data) if data and data != b"[DONE]" else None
        except ValueError:
            return None  # not ours to judge; the client sees it as the provider sent it

    def _feed_array(self, data: bytes) -> bytes:
        assert self._array is not None
        self._held += data
        start = 0
        for element in self._array.feed(data):
            at = self._held.find(element, start)
            start = at + len(element)
            try:
                names = called_tools(self.dialect, json.loads(element))
            except ValueError:
                names = []
            denied = next((n for n in names if self.is_denied(n)), None)
            if denied is not None:
                self.denied = denied
                before = bytes(self._held[:at])  # "[" or the separator after the last element
                self._held.clear()
                return before + self._terminal_object() + b"]"
        safe = len(self._held) - len(self._array.pending())
        out = bytes(self._held[:safe])
        del self._held[:safe]
        return out

    def _terminal_object(self) -> bytes:
        message = policy_message(self.denied or "")
        return _json({"error": {"code": 403, "message": message, "status": "PERMISSION_DENIED"}})

    def _terminal(self) -> bytes:
        message = policy_message(self.denied or "")
        end = self._eol * 2
        if self.dialect is Dialect.ANTHROPIC:
            error = {"type": "error", "error": {"type": "permission_error", "message": message}}
            return b"event: error" + self._eol + b"data: " + _json(error) + end
        if self.dialect is Dialect.OPENAI_CHAT:
            error = {"error": {"message": message, "type": "policy_violation", "code": "policy_violation"}}
            return b"data: " + _json(error) + end + b"data: [DONE]" + end
        if self.dialect is Dialect.OPENAI_RESPONSES:
            seq = self._events_passed
            error = {"type": "error", "code": "policy_violation", "message": message, "param": None}
            failed = {
                **self._response,
                "object": "response",
                "status": "failed",
                "error": {"code": "policy_violation", "message": message},
                "output": [],
            }
            return (
                b"event: error" + self._eol + b"data: " + _json({**error, "sequence_number": seq}) + end
                + b"event: response.failed" + self._eol + b"data: "
                + _json({"type": "response.failed", "sequence_number": seq + 1, "response": failed}) + end
            )  # fmt: skip
        return b"data: " + self._terminal_object() + end
