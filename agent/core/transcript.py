"""What was said in one call, for traces when the org asks for content capture.

`request_messages` reads the prompt from the request body; `Transcript` reads
the model's answer from a copy of the response (streamed or not), reusing the
taps' framing. Both are bounded and never raise: content capture is best
effort and must not cost the call. Redaction happens where the span is built.
"""

from __future__ import annotations

import json
from typing import Any

from agent.core.dialects import Dialect
from agent.core.taps import Tap, loads

MAX_CHARS = 256 * 1024  # a trace attribute, not an archive


def request_messages(dialect: Dialect, body: dict[str, Any]) -> list[Any]:
    """The prompt as the client sent it: system instructions first, then the turns."""
    if dialect is Dialect.ANTHROPIC:
        system = body.get("system")
        return ([{"role": "system", "content": system}] if system else []) + list(body.get("messages") or [])
    if dialect is Dialect.OPENAI_CHAT:
        return list(body.get("messages") or [])
    if dialect is Dialect.OPENAI_RESPONSES:
        turns = body.get("input")
        turns = [{"role": "user", "content": turns}] if isinstance(turns, str) else list(turns or [])
        instructions = body.get("instructions")
        return ([{"role": "system", "content": instructions}] if instructions else []) + turns
    system = body.get("systemInstruction") or body.get("system_instruction")
    return ([{"role": "system", "content": system}] if system else []) + list(body.get("contents") or [])


class _Answer:
    """The assistant's text and tool calls, accumulated across deltas."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[Any, dict[str, str]] = {}
        self.size = 0

    def add_text(self, text: Any) -> None:
        if isinstance(text, str) and self.size < MAX_CHARS:
            self.text.append(text)
            self.size += len(text)

    def add_call(self, key: Any, name: Any = None, arguments: Any = None) -> None:
        call = self.calls.setdefault(key, {"name": "", "arguments": ""})
        if isinstance(name, str) and name:
            call["name"] = name
        if isinstance(arguments, str) and self.size < MAX_CHARS:
            call["arguments"] += arguments
            self.size += len(arguments)
        elif arguments is not None and not isinstance(arguments, str):
            call["arguments"] = json.dumps(arguments)

    def result(self) -> list[dict[str, Any]]:
        if not self.text and not self.calls:
            return []
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.text)}
        if self.calls:
            message["tool_calls"] = list(self.calls.values())
        return [message]


class _AnthropicAnswer(_Answer):
    def event(self, name: str, data: bytes) -> None:
        obj = loads(data) or {}
        kind = obj.get("type")
        if kind == "content_block_start":
            block = obj.get("content_block") or {}
            if block.get("type") in ("tool_use", "server_tool_use", "mcp_tool_use"):
                self.add_call(obj.get("index"), block.get("name"))
            else:
                self.add_text(block.get("text"))
        elif kind == "content_block_delta":
            delta = obj.get("delta") or {}
            if delta.get("type") == "input_json_delta":
                self.add_call(obj.get("index"), arguments=delta.get("partial_json"))
            else:
                self.add_text(delta.get("text"))

    def body(self, obj: Any) -> None:
        for i, block in enumerate((obj or {}).get("content") or []):
            if block.get("type") == "text":
                self.add_text(block.get("text"))
            elif "name" in block:
                self.add_call(i, block.get("name"), block.get("input"))


class _ChatAnswer(_Answer):
    def _choice(self, choice: dict[str, Any]) -> None:
        part = choice.get("delta") or choice.get("message") or {}
        self.add_text(part.get("content"))
        for i, call in enumerate(part.get("tool_calls") or []):
            function = call.get("function") or {}
            self.add_call(call.get("index", i), function.get("name"), function.get("arguments"))

    def event(self, name: str, data: bytes) -> None:
        for choice in (loads(data) or {}).get("choices") or []:
            self._choice(choice)

    def body(self, obj: Any) -> None:
        for choice in (obj or {}).get("choices") or []:
            self._choice(choice)


class _ResponsesAnswer(_Answer):
    def event(self, name: str, data: bytes) -> None:
        obj = loads(data) or {}
        if obj.get("type") in ("response.completed", "response.incomplete", "response.failed"):
            self.body(obj.get("response"))

    def body(self, obj: Any) -> None:
        for i, item in enumerate((obj or {}).get("output") or []):
            if item.get("type") == "message":
                for part in item.get("content") or []:
                    self.add_text(part.get("text"))
            elif "name" in item:
                self.add_call(i, item.get("name"), item.get("arguments", item.get("input")))


class _GeminiAnswer(_Answer):
    def event(self, name: str, data: bytes) -> None:
        self.body(loads(data))

    def body(self, obj: Any) -> None:
        for candidate in (obj or {}).get("candidates") or []:
            for part in (candidate.get("content") or {}).get("parts") or []:
                if part.get("thought"):
                    continue
                self.add_text(part.get("text"))
                call = part.get("functionCall")
                if call:
                    self.add_call(len(self.calls), call.get("name"), call.get("args"))


_ANSWERS: dict[Dialect, type[_Answer]] = {
    Dialect.ANTHROPIC: _AnthropicAnswer,
    Dialect.OPENAI_CHAT: _ChatAnswer,
    Dialect.OPENAI_RESPONSES: _ResponsesAnswer,
    Dialect.GEMINI: _GeminiAnswer,
}


def make_transcript(dialect: Dialect) -> Tap:
    """A tap whose `finish()` gives the answer as `[{"role": "assistant", "content", "tool_calls"?}]`."""
    return Tap(_ANSWERS[dialect](), streaming=True, empty=list)  # type: ignore[arg-type]
