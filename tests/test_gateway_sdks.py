"""The official SDKs through the real agent to a loopback provider: every byte the
upstream sent reaches the client unchanged, and the tap records the usage."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from google.genai import types

from tests.fakes.providers import FakeProvider
from tests.gateway_client import anthropic_client, call_record, genai_client, openai_client, token_fields
from tests.harness import LOCAL_KEY, AgentProcess
from tests.recording import Recorder

TOOL = {"name": "get_weather", "description": "weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
OPENAI_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": TOOL["input_schema"]}}


def assert_passed_through(fake: FakeProvider, transport: Recorder, agent: AgentProcess) -> dict:
    """Bytes equal, upstream saw its own key, and the recorded usage is the provider's."""
    ex = fake.generate_exchanges()[-1]
    assert ex.done.wait(5)  # the client can hold the whole answer before the fake marks it written
    assert ex.complete
    assert transport.last == bytes(ex.sent)
    assert ex.credential is not None and ex.credential.startswith("sk-upstream-")
    assert LOCAL_KEY not in json.dumps(ex.headers)
    request_id = _request_id(transport)
    call = call_record(agent, request_id)
    assert token_fields(call["usage"]) == token_fields(ex.expected_usage())
    assert call["usage"]["reported"] is True
    return call


def _request_id(transport: Recorder) -> str:
    return transport.response_headers[-1]["x-langwatch-request-id"]


@pytest.fixture
def transport() -> Iterator[Recorder]:
    recorder = Recorder()
    yield recorder
    recorder.close()


# --- Anthropic -------------------------------------------------------------


def test_anthropic_create(governed, fake, transport):
    client = anthropic_client(governed, transport)
    message = client.messages.create(model="claude-sonnet-4-5", max_tokens=100, messages=[{"role": "user", "content": "say hi"}])
    assert message.content[0].type == "text" and message.content[0].text
    call = assert_passed_through(fake, transport, governed)
    assert call["model"] == message.model and call["stream"] is False
    assert call["usage"]["stop_reason"] == "end_turn"


def test_anthropic_stream_text(governed, fake, transport):
    client = anthropic_client(governed, transport)
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=100, messages=[{"role": "user", "content": "say hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.stop_reason == "end_turn"
    call = assert_passed_through(fake, transport, governed)
    assert call["stream"] is True and call["ttfb_ms"] is not None


def test_anthropic_stream_tool_call_with_streamed_arguments(governed, fake, transport):
    client = anthropic_client(governed, transport)
    with client.messages.stream(
        model="claude-sonnet-4-5",
        max_tokens=100,
        tools=[TOOL],
        messages=[{"role": "user", "content": 'FAKE_TOOL get_weather {"city": "Paris"}'}],
    ) as stream:
        final = stream.get_final_message()
    tool_use = [b for b in final.content if b.type == "tool_use"][0]
    assert tool_use.name == "get_weather" and tool_use.input == {"city": "Paris"}
    assert b"input_json_delta" in transport.last
    call = assert_passed_through(fake, transport, governed)
    assert call["usage"]["stop_reason"] == "tool_use"


def test_anthropic_count_tokens_and_models(governed, fake, transport):
    client = anthropic_client(governed, transport)
    count = client.messages.count_tokens(model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}])
    assert count.input_tokens > 0
    models = client.models.list()
    assert models.data and models.data[0].type == "model"


# --- OpenAI chat ------------------------------------------------------------


def test_openai_chat_create(governed, fake, transport):
    client = openai_client(governed, transport)
    completion = client.chat.completions.create(model="gpt-5.5", messages=[{"role": "user", "content": "say hi"}])
    assert completion.choices[0].message.content
    assert_passed_through(fake, transport, governed)


def test_openai_chat_stream_with_include_usage(governed, fake, transport):
    client = openai_client(governed, transport)
    chunks = list(
        client.chat.completions.create(
            model="gpt-5.5", messages=[{"role": "user", "content": "say hi"}], stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage is not None
    assert fake.last.body["stream_options"] == {"include_usage": True}
    assert_passed_through(fake, transport, governed)


def test_openai_chat_stream_without_include_usage_is_still_metered(governed, fake, transport):
    client = openai_client(governed, transport)
    chunks = list(client.chat.completions.create(model="gpt-5.5", messages=[{"role": "user", "content": "say hi"}], stream=True))
    # The upstream was asked for usage…
    ex = fake.generate_exchanges()[-1]
    assert ex.done.wait(5)
    assert ex.body["stream_options"] == {"include_usage": True}
    # …but the client sees exactly what it would have without it: no usage chunk, no usage member.
    assert all(c.usage is None and c.choices for c in chunks)
    received = transport.last
    assert b'"usage"' not in received
    upstream_frames = [f for f in ex.frames if b'"choices":[]' not in f]
    assert received == b"".join(f.replace(b',"usage":null', b"") for f in upstream_frames)
    call = call_record(governed, _request_id(transport))
    assert token_fields(call["usage"]) == token_fields(ex.expected_usage())


def test_openai_chat_streamed_tool_call(governed, fake, transport):
    client = openai_client(governed, transport)
    stream = client.chat.completions.create(
        model="gpt-5.5",
        messages=[{"role": "user", "content": 'FAKE_TOOL get_weather {"city": "Oslo"}'}],
        tools=[OPENAI_TOOL],
        stream=True,
        stream_options={"include_usage": True},
    )
    arguments = "".join(
        c.choices[0].delta.tool_calls[0].function.arguments or ""
        for c in stream
        if c.choices and c.choices[0].delta.tool_calls
    )
    assert json.loads(arguments) == {"city": "Oslo"}
    call = assert_passed_through(fake, transport, governed)
    assert call["usage"]["stop_reason"] == "tool_calls"


# --- OpenAI Responses -------------------------------------------------------


def test_responses_create(governed, fake, transport):
    client = openai_client(governed, transport)
    response = client.responses.create(model="gpt-5.5", input="say hi", store=False)
    assert response.output_text
    assert_passed_through(fake, transport, governed)


def test_responses_stream_with_function_call(governed, fake, transport):
    client = openai_client(governed, transport)
    with client.responses.stream(
        model="gpt-5.5",
        input='FAKE_TOOL get_weather {"city": "Rome"}',
        tools=[{"type": "function", "name": "get_weather", "parameters": TOOL["input_schema"]}],
        include=["reasoning.encrypted_content"],
        store=False,
    ) as stream:
        final = stream.get_final_response()
    call_item = [o for o in final.output if o.type == "function_call"][0]
    assert json.loads(call_item.arguments) == {"city": "Rome"}
    assert b"response.function_call_arguments.delta" in transport.last
    assert_passed_through(fake, transport, governed)


def test_responses_custom_and_namespace_tools_pass_untouched(governed, fake, transport):
    client = openai_client(governed, transport)
    tools = [
        {"type": "custom", "name": "apply_patch", "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}},
        {"type": "tool_search", "execution": "client"},
        {"type": "namespace", "name": "multi_agent_v1", "tools": [{"type": "function", "name": "spawn", "parameters": {}}]},
    ]
    with client.responses.stream(model="gpt-5.5", input=[{"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"}],
                                 tools=tools, store=False) as stream:
        stream.get_final_response()
    assert fake.last.body["tools"] == tools
    assert fake.last.body["input"][0]["role"] == "developer"


# --- Gemini -----------------------------------------------------------------


@pytest.mark.parametrize("api_version", ["v1", "v1beta"])
def test_gemini_generate_content(governed, fake, transport, api_version):
    client = genai_client(governed, transport, api_version)
    response = client.models.generate_content(model="gemini-2.5-flash", contents="say hi")
    assert response.text
    assert fake.last.path.startswith(f"/{api_version}/models/gemini-2.5-flash:generateContent")
    assert_passed_through(fake, transport, governed)


def test_gemini_stream_sse(governed, fake, transport):
    client = genai_client(governed, transport)
    text = "".join(chunk.text or "" for chunk in client.models.generate_content_stream(model="gemini-2.5-flash", contents="say hi"))
    assert text
    assert fake.last.stream == "sse"
    call = assert_passed_through(fake, transport, governed)
    assert call["usage"]["stop_reason"] == "STOP"


def test_gemini_function_call(governed, fake, transport):
    client = genai_client(governed, transport)
    tool = types.Tool(function_declarations=[types.FunctionDeclaration(name="get_weather", parameters_json_schema=TOOL["input_schema"])])
    response = client.models.generate_content(
        model="gemini-2.5-flash", contents='FAKE_TOOL get_weather {"city": "Lima"}', config=types.GenerateContentConfig(tools=[tool])
    )
    assert response.function_calls[0].name == "get_weather" and response.function_calls[0].args == {"city": "Lima"}
    assert_passed_through(fake, transport, governed)


def test_gemini_json_array_stream(governed, fake, transport):
    # The SDKs ask for ?alt=sse; older clients get Google's streamed JSON array.
    with transport.client(httpx) as http:
        with http.stream(
            "POST",
            governed.base_url + "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
            headers={"x-goog-api-key": LOCAL_KEY},
            json={"contents": [{"role": "user", "parts": [{"text": "say hi"}]}]},
        ) as response:
            body = response.read()
    assert fake.last.stream == "array"
    assert isinstance(json.loads(body), list)
    assert_passed_through(fake, transport, governed)


def test_gemini_count_tokens_and_models(governed, fake, transport):
    client = genai_client(governed, transport)
    assert client.models.count_tokens(model="gemini-2.5-flash", contents="hi").total_tokens > 0
    models = list(client.models.list())
    assert models and models[0].name.startswith("models/")
    assert fake.last.headers.get("x-goog-api-key", "").startswith("sk-upstream-")


def test_models_list_answers_in_each_callers_dialect(governed, fake):
    base = governed.base_url + "/v1/models"
    openai_list = httpx.get(base, headers={"authorization": f"Bearer {LOCAL_KEY}"}).json()
    anthropic_list = httpx.get(base, headers={"x-api-key": LOCAL_KEY, "anthropic-version": "2023-06-01"}).json()
    gemini_list = httpx.get(base, headers={"x-goog-api-key": LOCAL_KEY}).json()
    assert openai_list["object"] == "list"
    assert anthropic_list["data"][0]["type"] == "model"
    assert "models" in gemini_list
