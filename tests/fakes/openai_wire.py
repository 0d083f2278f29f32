"""OpenAI Chat Completions and Responses, spelled as api.openai.com does.

Chat streams are `data: <compact json>\\n\\n` … `data: [DONE]\\n\\n`. With
`stream_options.include_usage` every chunk carries `"usage":null` and one extra
chunk with `"choices":[]` and the usage precedes `[DONE]`; without it there is no
usage anywhere. Chunks also carry `obfuscation` padding unless
`stream_options.include_obfuscation` is false.

Responses streams are `event: <type>\\ndata: <compact json>\\n\\n`, every event with
a `sequence_number`, no `[DONE]`; `response.completed` carries the usage.
Non-streamed bodies are pretty-printed with two spaces, errors with four.
"""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.scenario import FakeUsage, Reply, TextAnswer, ToolCall, split

STREAM_CONTENT_TYPE = "text/event-stream; charset=utf-8"
JSON_CONTENT_TYPE = "application/json"
FINGERPRINT = "fp_fake0001"

ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("invalid_request_error", "Invalid request.", None),
    401: (
        "invalid_request_error",
        "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
        "invalid_api_key",
    ),
    403: ("invalid_request_error", "You are not allowed to sample from this model", "model_not_found"),
    404: ("invalid_request_error", "The model does not exist or you do not have access to it.", "model_not_found"),
    429: ("requests", "Rate limit reached for requests. Please try again in 1s.", "rate_limit_exceeded"),
    500: ("server_error", "The server had an error while processing your request. Sorry about that!", None),
    503: ("server_error", "The server is overloaded or not ready yet.", None),
}


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def pretty(obj: Any, indent: int = 2) -> bytes:
    return json.dumps(obj, indent=indent, ensure_ascii=False).encode()


def _obfuscation(n: int) -> str:
    # Real padding is random alphanumerics of varying length; ours is deterministic.
    alphabet = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
    return "".join(alphabet[(n * 7 + i * 13) % len(alphabet)] for i in range(2 + n % 11))


# --- Chat Completions ---------------------------------------------------------


def chat_usage(u: FakeUsage) -> dict[str, Any]:
    return {
        "prompt_tokens": u.prompt_total,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.prompt_total + u.output_tokens,
        "prompt_tokens_details": {
            "cached_tokens": u.cache_read_tokens,
            "cache_write_tokens": u.cache_write_tokens,
            "audio_tokens": 0,
        },
        "completion_tokens_details": {
            "reasoning_tokens": u.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _stream_options(reply: Reply) -> dict[str, Any]:
    options = reply.body.get("stream_options")
    return options if isinstance(options, dict) else {}


def chat_stream_frames(reply: Reply) -> list[bytes]:
    options = _stream_options(reply)
    include_usage = options.get("include_usage") is True
    obfuscate = options.get("include_obfuscation", True) is not False
    cid = reply.id("chatcmpl-", 29)
    frames: list[bytes] = []

    def chunk(choices: list[Any], usage: dict[str, Any] | None = None) -> bytes:
        obj: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": reply.created,
            "model": reply.model,
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
        }
        if include_usage:
            obj["usage"] = usage
        if obfuscate:
            obj["obfuscation"] = _obfuscation(len(frames))
        return b"data: " + dumps(obj) + b"\n\n"

    def choice(delta: dict[str, Any], finish: str | None = None) -> list[Any]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

    scenario = reply.scenario
    if isinstance(scenario, TextAnswer):
        frames.append(chunk(choice({"role": "assistant", "content": "", "refusal": None})))
        for piece in split(scenario.text, reply.text_deltas):
            frames.append(chunk(choice({"content": piece})))
        frames.append(chunk(choice({}, "stop")))
    else:
        opening = {
            "index": 0,
            "id": reply.id("call_", 24),
            "type": "function",
            "function": {"name": scenario.name, "arguments": ""},
        }
        frames.append(chunk(choice({"role": "assistant", "content": None, "tool_calls": [opening], "refusal": None})))
        for piece in split(scenario.arguments_json, reply.tool_arg_pieces):
            frames.append(chunk(choice({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})))
        frames.append(chunk(choice({}, "tool_calls")))
    if include_usage:
        frames.append(chunk([], chat_usage(reply.usage)))
    frames.append(b"data: [DONE]\n\n")
    return frames


def chat_body(reply: Reply) -> bytes:
    scenario = reply.scenario
    message: dict[str, Any] = {"role": "assistant"}
    if isinstance(scenario, TextAnswer):
        message |= {"content": scenario.text, "refusal": None, "annotations": []}
        finish = "stop"
    else:
        call = {
            "id": reply.id("call_", 24),
            "type": "function",
            "function": {"name": scenario.name, "arguments": scenario.arguments_json},
        }
        message |= {"content": None, "tool_calls": [call], "refusal": None, "annotations": []}
        finish = "tool_calls"
    return pretty(
        {
            "id": reply.id("chatcmpl-", 29),
            "object": "chat.completion",
            "created": reply.created,
            "model": reply.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": chat_usage(reply.usage),
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
        }
    )


# --- Responses ----------------------------------------------------------------


def responses_usage(u: FakeUsage) -> dict[str, Any]:
    return {
        "input_tokens": u.prompt_total,
        "input_tokens_details": {"cached_tokens": u.cache_read_tokens, "cache_write_tokens": u.cache_write_tokens},
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.prompt_total + u.output_tokens,
    }


def response_object(reply: Reply, status: str, output: list[Any], usage: dict[str, Any] | None) -> dict[str, Any]:
    """The response resource; request parameters are echoed back like the API does."""
    body = reply.body
    completed = status == "completed"
    return {
        "id": reply.id("resp_", 48),
        "object": "response",
        "created_at": reply.created,
        "status": status,
        "background": False,
        "completed_at": reply.created + 1 if completed else None,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": reply.model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
        "safety_identifier": body.get("safety_identifier"),
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_logprobs": 0,
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": body.get("metadata") or {},
    }


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _message_item(reply: Reply, status: str, text: str | None) -> dict[str, Any]:
    content = [] if text is None else [_output_text(text)]
    return {"id": reply.id("msg_", 48), "type": "message", "status": status, "content": content, "role": "assistant"}


def _call_item(reply: Reply, call: ToolCall, status: str, done: bool) -> dict[str, Any]:
    if call.custom:
        # custom_tool_call has no status field.
        return {
            "id": reply.id("ctc_", 48),
            "type": "custom_tool_call",
            "call_id": reply.id("call_", 24),
            "input": call.custom_input if done else "",
            "name": call.name,
        }
    return {
        "id": reply.id("fc_", 48),
        "type": "function_call",
        "status": status,
        "arguments": call.arguments_json if done else "",
        "call_id": reply.id("call_", 24),
        "name": call.name,
    }


def output_items(reply: Reply) -> list[dict[str, Any]]:
    scenario = reply.scenario
    if isinstance(scenario, TextAnswer):
        return [_message_item(reply, "completed", scenario.text)]
    return [_call_item(reply, scenario, "completed", done=True)]


def responses_stream_frames(reply: Reply) -> list[bytes]:
    frames: list[bytes] = []

    def event(kind: str, **fields: Any) -> None:
        data = {"type": kind, "sequence_number": len(frames)} | fields
        frames.append(b"event: " + kind.encode() + b"\ndata: " + dumps(data) + b"\n\n")

    def padding() -> str:
        return _obfuscation(len(frames))

    event("response.created", response=response_object(reply, "in_progress", [], None))
    event("response.in_progress", response=response_object(reply, "in_progress", [], None))
    scenario = reply.scenario
    at = {"output_index": 0}
    if isinstance(scenario, TextAnswer):
        item_id = reply.id("msg_", 48)
        part_at = {"item_id": item_id, "output_index": 0, "content_index": 0}
        event("response.output_item.added", **at, item=_message_item(reply, "in_progress", None))
        event("response.content_part.added", **part_at, part=_output_text(""))
        for piece in split(scenario.text, reply.text_deltas):
            event("response.output_text.delta", **part_at, delta=piece, logprobs=[], obfuscation=padding())
        event("response.output_text.done", **part_at, text=scenario.text, logprobs=[])
        event("response.content_part.done", **part_at, part=_output_text(scenario.text))
    else:
        added = _call_item(reply, scenario, "in_progress", done=False)
        item_at = {"item_id": added["id"], "output_index": 0}
        event("response.output_item.added", **at, item=added)
        if scenario.custom:
            for piece in split(scenario.custom_input, reply.tool_arg_pieces):
                event("response.custom_tool_call_input.delta", **item_at, delta=piece, obfuscation=padding())
            event("response.custom_tool_call_input.done", **item_at, input=scenario.custom_input)
        else:
            for piece in split(scenario.arguments_json, reply.tool_arg_pieces):
                event("response.function_call_arguments.delta", **item_at, delta=piece, obfuscation=padding())
            event("response.function_call_arguments.done", **item_at, arguments=scenario.arguments_json)
    output = output_items(reply)
    event("response.output_item.done", **at, item=output[0])
    event("response.completed", response=response_object(reply, "completed", output, responses_usage(reply.usage)))
    return frames


def responses_body(reply: Reply) -> bytes:
    return pretty(response_object(reply, "completed", output_items(reply), responses_usage(reply.usage)))


# --- Models and errors ----------------------------------------------------------

MODELS = [("gpt-5.5", 1767225600), ("gpt-5-codex", 1757980800), ("gpt-4o-mini", 1721172741)]


def models_body() -> bytes:
    data = [{"id": i, "object": "model", "created": c, "owned_by": "system"} for i, c in MODELS]
    return pretty({"object": "list", "data": data})


def chat_stream_error(message: str | None) -> bytes:
    """An error inside a 200 stream: a bare `error` object, and no `[DONE]` after it."""
    kind, default, code = ERRORS[500]
    return b"data: " + dumps({"error": {"message": message or default, "type": kind, "param": None, "code": code}}) + b"\n\n"


def responses_stream_error(message: str | None, sequence_number: int) -> bytes:
    data = {
        "type": "error",
        "sequence_number": sequence_number,
        "code": "server_error",
        "message": message or ERRORS[500][1],
        "param": None,
    }
    return b"event: error\ndata: " + dumps(data) + b"\n\n"


def error_body(status: int, message: str | None) -> bytes:
    kind, default, code = ERRORS.get(status, ("server_error", "The server had an error.", None))
    return pretty({"error": {"message": message or default, "type": kind, "param": None, "code": code}}, indent=4)
