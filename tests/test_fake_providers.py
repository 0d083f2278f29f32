"""The fake provider, checked against the official SDKs pointed straight at it (no gateway).

If an SDK can parse what the fake sends, and the fake's records match what the
SDK saw, end-to-end tests built on the fake say something about real clients.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from agent.core.usage import Usage
from tests.fakes.providers import FakeProvider, FakeUsage

TEXT = "Hello from the fake provider. FAKE-OK [{}]"
TOOL_PROMPT = 'Use the tool. FAKE_TOOL get_weather {"city": "Paris", "units": "metric"}'
TOOL_ARGS = {"city": "Paris", "units": "metric"}
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}, "units": {"type": "string"}}},
}
OPENAI_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": WEATHER_TOOL["input_schema"]},
}
RESPONSES_TOOL = {"type": "function", "name": "get_weather", "parameters": WEATHER_TOOL["input_schema"]}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeProvider]:
    with FakeProvider() as fp:
        yield fp


@pytest.fixture
def fp(server: FakeProvider) -> FakeProvider:
    server.reset()
    server.clear()
    return server


@pytest.fixture
def claude(fp: FakeProvider) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=fp.base_url, api_key="sk-ant-test", max_retries=0) as client:
        yield client


@pytest.fixture
def oai(fp: FakeProvider) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fp.base_url + "/v1", api_key="sk-test", max_retries=0) as client:
        yield client


def gemini_client(fp: FakeProvider, api_version: str | None = None) -> genai.Client:
    options = genai_types.HttpOptions(base_url=fp.base_url, api_version=api_version)
    return genai.Client(api_key="gemini-test", http_options=options)


def events_of(frames: list[bytes]) -> list[str]:
    return [f.split(b"\n", 1)[0].removeprefix(b"event: ").decode() for f in frames]


# --- Anthropic ------------------------------------------------------------------


def test_anthropic_create_text(fp: FakeProvider, claude: anthropic.Anthropic) -> None:
    msg = claude.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}])
    assert msg.content[0].type == "text" and msg.content[0].text == TEXT.format("anthropic")
    assert msg.stop_reason == "end_turn" and msg.model == "claude-sonnet-4-5"
    u = msg.usage
    assert (u.input_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens, u.output_tokens) == (1200, 3000, 600, 60)
    assert u.cache_creation is not None and u.cache_creation.ephemeral_1h_input_tokens == 100
    ex = fp.last
    assert ex.dialect == "anthropic" and ex.stream is None and ex.body["messages"][0]["content"] == "hi"
    assert ex.credential == "sk-ant-test"  # anthropic-python sends it as Authorization: Bearer
    assert json.loads(ex.sent)["id"] == msg.id and json.loads(ex.sent)["usage"] == ex.reported_usage
    assert ex.complete and not ex.client_disconnected


def test_anthropic_stream_text(fp: FakeProvider, claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(model="m", max_tokens=64, messages=[{"role": "user", "content": "hi"}]) as stream:
        deltas = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(deltas) == final.content[0].text == TEXT.format("anthropic")  # type: ignore[union-attr]
    assert len(deltas) == 3
    assert final.usage.output_tokens == 60 and final.usage.input_tokens == 1200
    assert final.usage.cache_read_input_tokens == 3000 and final.stop_reason == "end_turn"
    ex = fp.last
    assert events_of(ex.frames) == [
        "message_start", "content_block_start", "ping",
        "content_block_delta", "content_block_delta", "content_block_delta",
        "content_block_stop", "message_delta", "message_stop",
    ]  # fmt: skip
    assert bytes(ex.sent) == b"".join(ex.frames) and ex.frames[0].endswith(b"}\n\n")
    assert ex.expected_usage() == Usage(1200, 60, 3000, 500, 100, 0, reported=True)


def test_anthropic_stream_tool_use_and_round_trip(fp: FakeProvider, claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="m", max_tokens=64, tools=[WEATHER_TOOL], messages=[{"role": "user", "content": TOOL_PROMPT}]
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    block = final.content[0]
    assert block.type == "tool_use" and block.name == "get_weather" and block.input == TOOL_ARGS
    assert final.stop_reason == "tool_use" and "input_json" in kinds
    assert sum(b'"input_json_delta"' in f for f in fp.last.frames) == 4  # an empty opener, then 3 pieces

    follow_up = claude.messages.create(
        model="m",
        max_tokens=64,
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": TOOL_PROMPT},
            {"role": "assistant", "content": [block.model_dump()]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "sunny"}]},
        ],
    )
    assert follow_up.content[0].type == "text" and follow_up.stop_reason == "end_turn"


def test_anthropic_thinking_count_beta(fp: FakeProvider, claude: anthropic.Anthropic) -> None:
    claude.messages.create(
        model="m",
        max_tokens=64,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"anthropic-beta": "claude-code-20250219,thinking-token-count-2026-05-13"},
        stream=True,
    ).close()
    ex = fp.wait_for(1)[0]
    assert ex.reported_usage is not None and ex.reported_usage["output_tokens_details"] == {"thinking_tokens": 20}
    assert ex.expected_usage().reasoning_tokens == 20


def test_anthropic_count_tokens_and_models(fp: FakeProvider, claude: anthropic.Anthropic) -> None:
    counted = claude.messages.count_tokens(model="m", messages=[{"role": "user", "content": "hi"}])
    assert counted.input_tokens == 4800
    ids = [m.id for m in claude.models.list()]
    assert "claude-sonnet-4-5-20250929" in ids
    assert [ex.operation for ex in fp.exchanges] == ["count_tokens", "list_models"]
    assert fp.exchanges[1].dialect == "anthropic"


def test_anthropic_overloaded_error(fp: FakeProvider, claude: anthropic.Anthropic) -> None:
    fp.error_status = 529
    with pytest.raises(anthropic.APIStatusError) as caught:
        claude.messages.create(model="m", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 529
    assert caught.value.body["error"] == {"type": "overloaded_error", "message": "Overloaded"}  # type: ignore[index]
    assert fp.last.status == 529 and ("x-should-retry", "true") in fp.last.response_headers


# --- OpenAI Chat Completions --------------------------------------------------------


def test_openai_chat_create(fp: FakeProvider, oai: openai.OpenAI) -> None:
    done = oai.chat.completions.create(model="gpt-5.5", messages=[{"role": "user", "content": "hi"}])
    assert done.choices[0].message.content == TEXT.format("openai") and done.choices[0].finish_reason == "stop"
    assert done.usage is not None and done.usage.prompt_tokens == 4800
    assert done.usage.prompt_tokens_details and done.usage.prompt_tokens_details.cached_tokens == 3000
    assert done.usage.completion_tokens_details and done.usage.completion_tokens_details.reasoning_tokens == 20
    assert fp.last.headers["authorization"] == "Bearer sk-test"
    assert fp.last.sent.startswith(b'{\n  "id": "chatcmpl-')  # OpenAI pretty-prints JSON bodies
    assert fp.last.expected_usage() == Usage(1200, 60, 3000, 600, 0, 20, reported=True)


def test_openai_chat_stream_without_usage(fp: FakeProvider, oai: openai.OpenAI) -> None:
    chunks = list(oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == TEXT.format("openai")
    assert all(c.usage is None for c in chunks)
    ex = fp.last
    assert b'"usage"' not in ex.sent and ex.reported_usage is None
    assert ex.frames[-1] == b"data: [DONE]\n\n" and ex.frames[-2].count(b'"finish_reason":"stop"') == 1


def test_openai_chat_stream_with_usage(fp: FakeProvider, oai: openai.OpenAI) -> None:
    chunks = list(
        oai.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True}
        )
    )
    *body, last = chunks
    assert last.choices == [] and last.usage is not None and last.usage.total_tokens == 4860
    assert all(c.usage is None for c in body)
    frames = fp.last.frames
    assert all(b'"usage":null' in f for f in frames[:-2]) and frames[-1] == b"data: [DONE]\n\n"


def test_openai_chat_streamed_tool_calls(fp: FakeProvider, oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="m", tools=[OPENAI_TOOL], messages=[{"role": "user", "content": TOOL_PROMPT}], stream=True  # type: ignore[list-item]
    )
    pieces, name, finish = [], None, None
    for chunk in stream:
        choice = chunk.choices[0]
        for call in choice.delta.tool_calls or []:
            name = name or (call.function and call.function.name)
            pieces.append(call.function.arguments if call.function and call.function.arguments else "")
        finish = choice.finish_reason or finish
    assert name == "get_weather" and finish == "tool_calls"
    assert len([p for p in pieces if p]) == 3 and json.loads("".join(pieces)) == TOOL_ARGS


# --- OpenAI Responses -----------------------------------------------------------------


def test_openai_responses_create(fp: FakeProvider, oai: openai.OpenAI) -> None:
    resp = oai.responses.create(model="gpt-5.5", input="hi")
    assert resp.output_text == TEXT.format("openai") and resp.status == "completed"
    assert resp.usage is not None and resp.usage.input_tokens == 4800
    assert resp.usage.input_tokens_details.cached_tokens == 3000
    assert resp.usage.output_tokens_details.reasoning_tokens == 20


def test_openai_responses_stream_event_sequence(fp: FakeProvider, oai: openai.OpenAI) -> None:
    events = list(oai.responses.create(model="m", input=[{"role": "user", "content": "hi"}], stream=True))
    assert [e.type for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed",
    ]  # fmt: skip
    assert [e.sequence_number for e in events] == list(range(len(events)))
    completed = events[-1]
    assert completed.type == "response.completed" and completed.response.output_text == TEXT.format("openai")
    assert completed.response.usage is not None and completed.response.usage.total_tokens == 4860
    assert fp.last.frames[0].startswith(b"event: response.created\ndata: {")


def test_openai_responses_stream_helper_function_call(fp: FakeProvider, oai: openai.OpenAI) -> None:
    with oai.responses.stream(model="m", input=TOOL_PROMPT, tools=[RESPONSES_TOOL]) as stream:  # type: ignore[list-item]
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    call = final.output[0]
    assert call.type == "function_call" and call.name == "get_weather" and json.loads(call.arguments) == TOOL_ARGS
    assert kinds.count("response.function_call_arguments.delta") == 3
    assert "response.function_call_arguments.done" in kinds

    follow_up = oai.responses.create(
        model="m",
        input=[
            {"role": "user", "content": TOOL_PROMPT},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ],
    )
    assert follow_up.output_text == TEXT.format("openai")


def test_openai_responses_custom_tool(fp: FakeProvider, oai: openai.OpenAI) -> None:
    patch = "*** Begin Patch\n*** Add File: a.txt\n+x\n*** End Patch\n"
    prompt = "FAKE_TOOL apply_patch " + json.dumps({"input": patch})
    events = list(
        oai.responses.create(
            model="m", input=prompt, tools=[{"type": "custom", "name": "apply_patch"}], stream=True  # type: ignore[list-item]
        )
    )
    done = [e for e in events if e.type == "response.output_item.done"][0]
    assert done.item.type == "custom_tool_call" and done.item.input == patch  # type: ignore[union-attr]


def test_openai_models_and_rate_limit(fp: FakeProvider, oai: openai.OpenAI) -> None:
    assert "gpt-5.5" in [m.id for m in oai.models.list()]
    fp.configure(error_status=429, error_times=1)
    with pytest.raises(openai.RateLimitError) as caught:
        oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "rate_limit_exceeded" and caught.value.type == "requests"
    # error_times=1: the next request succeeds, like a fallback or retry would see.
    assert oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}]).choices


# --- Gemini ---------------------------------------------------------------------------------


@pytest.mark.parametrize("api_version", ["v1", "v1beta"])
def test_gemini_generate_content(fp: FakeProvider, api_version: str) -> None:
    with gemini_client(fp, api_version) as client:
        resp = client.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert resp.text == TEXT.format("gemini")
    assert resp.candidates and resp.candidates[0].finish_reason == genai_types.FinishReason.STOP
    meta = resp.usage_metadata
    assert meta is not None
    assert (meta.prompt_token_count, meta.cached_content_token_count) == (4800, 3000)
    assert (meta.candidates_token_count, meta.thoughts_token_count, meta.total_token_count) == (40, 20, 4860)
    ex = fp.last
    assert ex.path == f"/{api_version}/models/gemini-2.5-flash:generateContent"
    assert ex.headers["x-goog-api-key"] == "gemini-test"
    assert ex.expected_usage() == Usage(1800, 60, 3000, 0, 0, 20, reported=True)


@pytest.mark.parametrize("api_version", ["v1", "v1beta"])
def test_gemini_stream(fp: FakeProvider, api_version: str) -> None:
    with gemini_client(fp, api_version) as client:
        chunks = list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="hi"))
    assert "".join(c.text or "" for c in chunks) == TEXT.format("gemini") and len(chunks) == 3
    assert chunks[-1].candidates and chunks[-1].candidates[0].finish_reason == genai_types.FinishReason.STOP
    assert chunks[-1].usage_metadata and chunks[-1].usage_metadata.candidates_token_count == 40
    ex = fp.last
    assert ex.path == f"/{api_version}/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert ex.stream == "sse" and all(f.startswith(b"data: {") and f.endswith(b"}\r\n\r\n") for f in ex.frames)


def test_gemini_function_call(fp: FakeProvider) -> None:
    with gemini_client(fp) as client:
        resp = client.models.generate_content(model="gemini-2.5-flash", contents=TOOL_PROMPT)
        calls = resp.function_calls
        assert calls and calls[0].name == "get_weather" and calls[0].args == TOOL_ARGS
        follow_up = client.models.generate_content(
            model="gemini-2.5-flash",
            contents=[
                genai_types.Content(role="user", parts=[genai_types.Part(text=TOOL_PROMPT)]),
                resp.candidates[0].content,  # type: ignore[index, list-item]
                genai_types.Content(
                    role="user",
                    parts=[genai_types.Part.from_function_response(name="get_weather", response={"output": "sunny"})],
                ),
            ],
        )
    assert follow_up.text == TEXT.format("gemini")
    sent_back = fp.last.body["contents"][1]["parts"][0]
    assert sent_back["thoughtSignature"] and sent_back["functionCall"]["name"] == "get_weather"


def test_gemini_count_tokens_and_models(fp: FakeProvider) -> None:
    with gemini_client(fp) as client:
        assert client.models.count_tokens(model="gemini-2.5-flash", contents="hi").total_tokens == 4800
        names = [m.name for m in client.models.list()]
    assert "models/gemini-2.5-flash" in names
    listing = fp.last
    assert listing.path.startswith("/v1/models") and listing.dialect == "gemini"


def test_gemini_json_array_stream_and_key_param(fp: FakeProvider) -> None:
    url = fp.base_url + "/v1beta/models/gemini-2.5-flash:streamGenerateContent?key=qk"
    body = {"contents": [{"role": "user", "parts": [{"text": "hi <there>"}]}]}
    with httpx.stream("POST", url, json=body) as response:
        assert response.headers["content-type"] == "application/json; charset=UTF-8"
        raw = b"".join(response.iter_raw())
    items = json.loads(raw)
    assert [i["candidates"][0].get("finishReason") for i in items] == [None, None, "STOP"]
    ex = fp.last
    assert ex.auth == {"key": "qk"} and ex.credential == "qk" and ex.stream == "array"
    assert ex.frames[0].startswith(b"[{\n") and ex.frames[1].startswith(b"\r\n,{") and ex.frames[-1] == b"\r\n]"


def test_gemini_errors(fp: FakeProvider) -> None:
    fp.error_status = 503
    with gemini_client(fp) as client, pytest.raises(genai_errors.ServerError) as caught:
        client.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert caught.value.code == 503 and caught.value.status == "UNAVAILABLE"
    fp.configure(error_status=None, require_key="right")
    with gemini_client(fp) as client, pytest.raises(genai_errors.ClientError) as wrong:
        client.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert wrong.value.code == 400 and "API key not valid" in (wrong.value.message or "")


# --- Fake behaviours: auth, truncation, disconnects, hangs --------------------------------


def test_require_key(fp: FakeProvider) -> None:
    fp.require_key = "good"
    with anthropic.Anthropic(base_url=fp.base_url, api_key="bad", max_retries=0) as client:
        with pytest.raises(anthropic.AuthenticationError):
            client.messages.create(model="m", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    with anthropic.Anthropic(base_url=fp.base_url, api_key="good", max_retries=0) as client:
        assert client.messages.create(model="m", max_tokens=8, messages=[{"role": "user", "content": "hi"}]).content


def test_usage_override(fp: FakeProvider, oai: openai.OpenAI) -> None:
    fp.usage = FakeUsage(input_tokens=7, cache_read_tokens=0, cache_write_5m_tokens=0, cache_write_1h_tokens=0, output_tokens=3, reasoning_tokens=0)
    done = oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert done.usage is not None and (done.usage.prompt_tokens, done.usage.completion_tokens) == (7, 3)


def test_truncate_after_drops_the_stream(fp: FakeProvider) -> None:
    fp.truncate_after = 2
    body = {"model": "m", "max_tokens": 8, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("POST", fp.base_url + "/v1/messages", json=body) as response:
            b"".join(response.iter_raw())
    ex = fp.wait_for(1)[0]
    assert ex.truncated and not ex.complete and len(ex.frames) == 2 and b"message_stop" not in ex.sent


def test_client_disconnect_is_recorded(fp: FakeProvider) -> None:
    fp.configure(delay=0.02, text_deltas=40)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.Client() as client:
        with client.stream("POST", fp.base_url + "/v1/chat/completions", json=body) as response:
            next(response.iter_raw())
    ex = fp.wait_for(1, timeout=5)[0]
    assert ex.client_disconnected and not ex.complete


def test_hang_then_client_gives_up(fp: FakeProvider) -> None:
    fp.hang = True
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(fp.base_url + "/v1/chat/completions", json={"model": "m", "messages": []}, timeout=0.3)
    assert time.monotonic() - started < 2
    ex = fp.wait_for(1, timeout=5)[0]
    assert ex.client_disconnected and ex.status == 0


def test_head_root_and_keep_alive(fp: FakeProvider) -> None:
    # Claude Code probes `HEAD /` first; several requests share one kept-alive connection.
    with socket.create_connection((fp.host, fp.port)) as sock:
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 404 ")
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b'"object": "list"' not in data:
            data += sock.recv(65536)
    assert [ex.path for ex in fp.exchanges] == ["/", "/v1/models"]


def test_stream_error_event(fp: FakeProvider, claude: anthropic.Anthropic, oai: openai.OpenAI) -> None:
    fp.stream_error_after = 3
    with pytest.raises(anthropic.APIStatusError) as caught:
        with claude.messages.stream(model="m", max_tokens=8, messages=[{"role": "user", "content": "hi"}]) as stream:
            stream.get_final_message()
    assert "overloaded_error" in str(caught.value)
    assert events_of(fp.last.frames)[-1] == "error" and fp.last.complete and fp.last.reported_usage is None
    with pytest.raises(openai.APIError):
        list(oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert fp.last.frames[-1].startswith(b'data: {"error":') and b"[DONE]" not in fp.last.sent


def test_expected_usage_follows_what_was_reported(fp: FakeProvider, oai: openai.OpenAI) -> None:
    list(oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert fp.last.expected_usage() == Usage()
