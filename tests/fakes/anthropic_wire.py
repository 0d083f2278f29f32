"""Anthropic Messages API, spelled as api.anthropic.com does.

Streams are `event: <type>\\ndata: <compact json>\\n\\n`, no `[DONE]`. The order is
message_start (input usage, output_tokens 1), content_block_start, ping,
content_block_delta…, content_block_stop, message_delta (stop_reason and the
cumulative usage, final output_tokens), message_stop.
"""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.scenario import FakeUsage, Reply, TextAnswer, ToolCall, split

STREAM_CONTENT_TYPE = "text/event-stream; charset=utf-8"
JSON_CONTENT_TYPE = "application/json"
# Claude Code sends this beta; with it the API adds output_tokens_details.thinking_tokens.
THINKING_COUNT_BETA = "thinking-token-count-"

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
ERROR_MESSAGES = {
    401: "invalid x-api-key",
    404: "Not Found",
    429: "Number of request tokens has exceeded your per-minute rate limit",
    500: "Internal server error",
    529: "Overloaded",
}


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def sse(data: dict[str, Any]) -> bytes:
    return b"event: " + str(data["type"]).encode() + b"\ndata: " + dumps(data) + b"\n\n"


def _wants_thinking_count(reply: Reply) -> bool:
    return THINKING_COUNT_BETA in reply.headers.get("anthropic-beta", "")


def input_usage(u: FakeUsage) -> dict[str, Any]:
    return {
        "input_tokens": u.input_tokens,
        "cache_creation_input_tokens": u.cache_write_tokens,
        "cache_read_input_tokens": u.cache_read_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": u.cache_write_5m_tokens,
            "ephemeral_1h_input_tokens": u.cache_write_1h_tokens,
        },
    }


def full_usage(reply: Reply) -> dict[str, Any]:
    """The `usage` of a non-streamed message (and what a stream adds up to)."""
    u = reply.usage
    usage = input_usage(u) | {"output_tokens": u.output_tokens, "service_tier": "standard"}
    if _wants_thinking_count(reply):
        usage["output_tokens_details"] = {"thinking_tokens": u.reasoning_tokens}
    return usage


def delta_usage(reply: Reply) -> dict[str, Any]:
    """message_delta usage: cumulative; the input counts are repeated, output_tokens is final."""
    u = reply.usage
    usage: dict[str, Any] = {
        "input_tokens": u.input_tokens,
        "cache_creation_input_tokens": u.cache_write_tokens,
        "cache_read_input_tokens": u.cache_read_tokens,
        "output_tokens": u.output_tokens,
    }
    if _wants_thinking_count(reply):
        usage["output_tokens_details"] = {"thinking_tokens": u.reasoning_tokens}
    return usage


def _message(reply: Reply, content: list[Any], stop_reason: str | None, usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": reply.id("msg_01"),
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }


def _stop_reason(reply: Reply) -> str:
    return "tool_use" if isinstance(reply.scenario, ToolCall) else "end_turn"


def stream_frames(reply: Reply) -> list[bytes]:
    start_usage = input_usage(reply.usage) | {"output_tokens": 1, "service_tier": "standard"}
    frames = [sse({"type": "message_start", "message": _message(reply, [], None, start_usage)})]
    scenario = reply.scenario
    if isinstance(scenario, TextAnswer):
        block: dict[str, Any] = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": piece} for piece in split(scenario.text, reply.text_deltas)]
    else:
        block = {"type": "tool_use", "id": reply.id("toolu_01"), "name": scenario.name, "input": {}}
        # The API opens every tool_use block with an empty partial_json.
        pieces = [""] + split(scenario.arguments_json, reply.tool_arg_pieces)
        deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in pieces]
    frames.append(sse({"type": "content_block_start", "index": 0, "content_block": block}))
    # The real ping is not compact JSON: `{"type": "ping"}`.
    frames.append(b'event: ping\ndata: {"type": "ping"}\n\n')
    frames += [sse({"type": "content_block_delta", "index": 0, "delta": d}) for d in deltas]
    frames.append(sse({"type": "content_block_stop", "index": 0}))
    frames.append(
        sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": _stop_reason(reply), "stop_sequence": None},
                "usage": delta_usage(reply),
            }
        )
    )
    frames.append(sse({"type": "message_stop"}))
    return frames


def message_body(reply: Reply) -> bytes:
    scenario = reply.scenario
    if isinstance(scenario, TextAnswer):
        content: list[Any] = [{"type": "text", "text": scenario.text}]
    else:
        content = [{"type": "tool_use", "id": reply.id("toolu_01"), "name": scenario.name, "input": scenario.arguments}]
    return dumps(_message(reply, content, _stop_reason(reply), full_usage(reply)))


def count_tokens_body(u: FakeUsage) -> bytes:
    return dumps({"input_tokens": u.prompt_total})


MODELS = [
    ("claude-opus-4-8", "Claude Opus 4.8", "2026-08-05T00:00:00Z"),
    ("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z"),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-01T00:00:00Z"),
]


def models_body() -> bytes:
    data = [{"type": "model", "id": i, "display_name": n, "created_at": c} for i, n, c in MODELS]
    return dumps({"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]})


def error_body(status: int, message: str | None, request_id: str) -> bytes:
    kind = ERROR_TYPES.get(status, "api_error")
    text = message or ERROR_MESSAGES.get(status, kind.replace("_", " "))
    return dumps({"type": "error", "error": {"type": kind, "message": text}, "request_id": request_id})


def stream_error(message: str | None, request_id: str) -> bytes:
    """An error inside a 200 stream (the API's mid-stream `overloaded_error`)."""
    return b"event: error\ndata: " + error_body(529, message, request_id) + b"\n\n"
