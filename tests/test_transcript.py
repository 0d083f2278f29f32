"""Content capture reads the answer the way each provider sends it (frames from the fake's wire modules)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from agent.core.dialects import Dialect
from agent.core.transcript import make_transcript, request_messages
from tests.fakes import anthropic_wire, gemini_wire, openai_wire
from tests.fakes.scenario import FakeUsage, Reply, TextAnswer, ToolCall

TEXT = "Hello from the transcript test."
CALL = ToolCall("get_weather", {"city": "Paris"})


def _reply(scenario: TextAnswer | ToolCall, body: dict | None = None) -> Reply:
    return Reply(model="m", scenario=scenario, usage=FakeUsage(), text_deltas=4, tool_arg_pieces=3, seq=1,
                 created=1_700_000_000, body=body or {}, headers={})


def _answer(dialect: Dialect, chunks: list[bytes]) -> list[dict]:
    transcript = make_transcript(dialect)
    for chunk in chunks:
        transcript.feed(chunk)
    return transcript.finish()  # type: ignore[return-value]


WIRES: dict[Dialect, list[Callable[[Reply], list[bytes]]]] = {
    Dialect.ANTHROPIC: [anthropic_wire.stream_frames, lambda r: [anthropic_wire.message_body(r)]],
    Dialect.OPENAI_CHAT: [openai_wire.chat_stream_frames, lambda r: [openai_wire.chat_body(r)]],
    Dialect.OPENAI_RESPONSES: [openai_wire.responses_stream_frames, lambda r: [openai_wire.responses_body(r)]],
    Dialect.GEMINI: [gemini_wire.sse_frames, gemini_wire.array_frames, lambda r: [gemini_wire.generate_body(r)]],
}
CASES = [(d, i) for d, wires in WIRES.items() for i in range(len(wires))]


@pytest.mark.parametrize(("dialect", "wire"), CASES)
def test_text_answer(dialect: Dialect, wire: int) -> None:
    frames = WIRES[dialect][wire](_reply(TextAnswer(TEXT)))
    assert _answer(dialect, frames) == [{"role": "assistant", "content": TEXT}]


@pytest.mark.parametrize(("dialect", "wire"), CASES)
def test_tool_call_answer(dialect: Dialect, wire: int) -> None:
    frames = WIRES[dialect][wire](_reply(CALL, {"tools": [{"type": "function", "name": "get_weather"}]}))
    [message] = _answer(dialect, frames)
    [call] = message["tool_calls"]
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "Paris"}


def test_garbage_gives_nothing_and_never_raises() -> None:
    assert _answer(Dialect.ANTHROPIC, [b"<html>502</html>"]) == []
    assert _answer(Dialect.GEMINI, [b"[{\"candidates\": [tru"]) == []


def test_request_messages_put_system_first() -> None:
    body = {"system": "be brief", "messages": [{"role": "user", "content": "hi"}]}
    assert request_messages(Dialect.ANTHROPIC, body) == [{"role": "system", "content": "be brief"}, body["messages"][0]]
    assert request_messages(Dialect.OPENAI_RESPONSES, {"input": "hi"}) == [{"role": "user", "content": "hi"}]
    assert request_messages(Dialect.GEMINI, {"contents": [{"role": "user"}]}) == [{"role": "user"}]
