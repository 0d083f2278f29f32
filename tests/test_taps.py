"""Response taps read the same Usage from every chunking of real provider frames.

Frames are written the way each provider sends them: Anthropic and OpenAI SSE
with LF line ends and compact JSON, Gemini `?alt=sse` with CRLF and `": "`
separators, Gemini's JSON-array stream pretty-printed and joined by "\\n,\\r\\n".
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from agent.core.chat_usage import UsageFrameHider, hide_usage, inject_stream_usage
from agent.core.dialects import Dialect
from agent.core.jsonarray import JSONArraySplitter
from agent.core.taps import Tap, make_tap
from agent.core.usage import Usage


def chunkings(data: bytes) -> list[list[bytes]]:
    """Whole, byte by byte, and seeded random splits (some tiny, some large)."""
    out = [[data], [data[i : i + 1] for i in range(len(data))]]
    for seed in range(6):
        rng = random.Random(seed)
        top = 7 if seed % 2 else 300
        pieces, i = [], 0
        while i < len(data):
            n = rng.randint(1, top)
            pieces.append(data[i : i + n])
            i += n
        out.append(pieces)
    return out


def tap_usage(dialect: Dialect, streaming: bool, chunks: list[bytes]) -> Usage:
    tap = make_tap(dialect, streaming)
    for chunk in chunks:
        tap.feed(chunk)
    return tap.finish()


def sse(*events: str) -> bytes:
    """Events joined as the providers write them: each ends with a blank line."""
    return "".join(e.strip("\n") + "\n\n" for e in events).encode()


def without_event_names(stream: bytes) -> bytes:
    return b"\n".join(line for line in stream.split(b"\n") if not line.startswith(b"event:"))


# --- Anthropic --------------------------------------------------------------------

# Claude Code turn on a 2026 API version: thinking, a tool call, 1 h cache
# writes, and a message_delta that repeats the input and cache counts.
ANTHROPIC_TOOL_STREAM = sse(
    'event: message_start\ndata: {"type":"message_start","message":{"model":"claude-opus-4-8","id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":3,"cache_creation_input_tokens":2154,"cache_read_input_tokens":18034,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":2154},"output_tokens":1,"service_tier":"standard","inference_geo":"global"}}}',
    'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}',
    'event: ping\ndata: {"type": "ping"}',
    'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Read it. Not a \\"type\\":\\"message_delta\\" nor \\"usage\\":{} here."}}',
    'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"}}',
    'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}',
    'event: content_block_start\ndata: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"Read","input":{}}}',
    'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}',
    'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"file_path\\": \\"/abs/he"}}',
    'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"llo.txt\\"}"}}',
    'event: content_block_stop\ndata: {"type":"content_block_stop","index":1}',
    'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"input_tokens":3,"cache_creation_input_tokens":2154,"cache_read_input_tokens":18034,"output_tokens":87,"output_tokens_details":{"thinking_tokens":41}}}',
    'event: message_stop\ndata: {"type":"message_stop"}',
)
ANTHROPIC_TOOL_USAGE = Usage(
    input_tokens=3,
    output_tokens=87,
    cache_read_tokens=18034,
    cache_write_1h_tokens=2154,
    reasoning_tokens=41,
    model="claude-opus-4-8",
    stop_reason="tool_use",
    reported=True,
)

# The documented 2023-06-01 shape: message_delta carries output_tokens only.
ANTHROPIC_TEXT_STREAM = sse(
    'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5-20250929","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":1200,"cache_read_input_tokens":0,"output_tokens":1}}}',
    'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
    'event: ping\ndata: {"type": "ping"}',
    'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}',
    'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"! Ça va? 👋"}}',
    'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}',
    'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}',
    'event: message_stop\ndata: {"type":"message_stop"}',
)
ANTHROPIC_TEXT_USAGE = Usage(
    input_tokens=25,
    output_tokens=15,
    cache_write_5m_tokens=1200,  # no TTL breakdown: the default 5 m write
    model="claude-sonnet-4-5-20250929",
    stop_reason="end_turn",
    reported=True,
)

ANTHROPIC_OVERLOADED_STREAM = sse(
    'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","content":[],"model":"claude-haiku-4-5-20251001","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":410,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}',
    'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
    'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}',
)

ANTHROPIC_BODY = b"""{"model":"claude-sonnet-4-5-20250929","id":"msg_01BnKqZ6d3mXsc4hW9y5wG2e","type":"message","role":"assistant","content":[{"type":"text","text":"Hi! How can I help?"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":300,"cache_read_input_tokens":4000,"cache_creation":{"ephemeral_5m_input_tokens":100,"ephemeral_1h_input_tokens":200},"output_tokens":9,"service_tier":"standard"}}"""

ANTHROPIC_ERROR_BODY = b'{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"},"request_id":"req_018EeWyXxfu5pfWkrYcMdjWG"}'


# --- OpenAI Chat Completions -----------------------------------------------------------

CHAT_HEAD = '{"id":"chatcmpl-CNB1f6y3cpF0dDLn8Iwa1tbkKMvW3","object":"chat.completion.chunk","created":1759737311,"model":"gpt-4.1-mini-2025-04-14","service_tier":"default","system_fingerprint":"fp_4fce0778af",'

CHAT_TEXT_STREAM = sse(
    "data: " + CHAT_HEAD + '"choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"MhnzAjK7"}',
    "data: " + CHAT_HEAD + '"choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"3xQ"}',
    "data: " + CHAT_HEAD + '"choices":[{"index":0,"delta":{"content":" \\"usage\\":null, \\"choices\\":[] there"},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":""}',
    "data: " + CHAT_HEAD + '"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null,"obfuscation":"Bf0"}',
    "data: " + CHAT_HEAD + '"choices":[],"usage":{"prompt_tokens":1117,"completion_tokens":12,"total_tokens":1129,"prompt_tokens_details":{"cached_tokens":1024,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"obfuscation":"xK2sVb"}',
    "data: [DONE]",
)
CHAT_TEXT_USAGE = Usage(
    input_tokens=93,
    output_tokens=12,
    cache_read_tokens=1024,
    model="gpt-4.1-mini-2025-04-14",
    stop_reason="stop",
    reported=True,
)

O4 = '{"id":"chatcmpl-BYaWt7CkGQqbnM2Xzo4wc3pLp0Ue5","object":"chat.completion.chunk","created":1747750000,"model":"o4-mini-2025-04-16","service_tier":"default","system_fingerprint":null,'
CHAT_TOOL_STREAM = sse(
    "data: " + O4 + '"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_DdmO9pD3xa9XTPNJ32zg2hcA","type":"function","function":{"name":"get_weather","arguments":""}}],"refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}',
    "data: " + O4 + '"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\""}}]},"logprobs":null,"finish_reason":null}],"usage":null}',
    "data: " + O4 + '"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"location"}}]},"logprobs":null,"finish_reason":null}],"usage":null}',
    "data: " + O4 + '"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\\":\\"Paris, \\\\\\"FR\\\\\\"\\"}"}}]},"logprobs":null,"finish_reason":null}],"usage":null}',
    "data: " + O4 + '"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}],"usage":null}',
    "data: " + O4 + '"choices":[],"usage":{"prompt_tokens":82,"completion_tokens":215,"total_tokens":297,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":192,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}',
    "data: [DONE]",
)
CHAT_TOOL_USAGE = Usage(
    input_tokens=82,
    output_tokens=215,
    reasoning_tokens=192,
    model="o4-mini-2025-04-16",
    stop_reason="tool_calls",
    reported=True,
)

# Aider without stream_options: no usage anywhere.
CHAT_NO_USAGE_STREAM = sse(
    "data: " + CHAT_HEAD + '"choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]}',
    "data: " + CHAT_HEAD + '"choices":[{"index":0,"delta":{"content":"hi"},"logprobs":null,"finish_reason":null}]}',
    "data: " + CHAT_HEAD + '"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"length"}]}',
    "data: [DONE]",
)

CHAT_BODY = b"""{
  "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
  "object": "chat.completion",
  "created": 1741569952,
  "model": "gpt-4.1-2025-04-14",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": "Hello! How can I assist you today?",
        "refusal": null,
        "annotations": []
      },
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 2019,
    "completion_tokens": 10,
    "total_tokens": 2029,
    "prompt_tokens_details": {
      "cached_tokens": 1920,
      "audio_tokens": 0
    },
    "completion_tokens_details": {
      "reasoning_tokens": 0,
      "audio_tokens": 0,
      "accepted_prediction_tokens": 0,
      "rejected_prediction_tokens": 0
    }
  },
  "service_tier": "default"
}
"""

CHAT_ERROR_BODY = b"""{
  "error": {
    "message": "This model's maximum context length is 128000 tokens.",
    "type": "invalid_request_error",
    "param": "messages",
    "code": "context_length_exceeded"
  }
}"""


# --- OpenAI Responses ---------------------------------------------------------------------


def _response(status: str, usage: str, extra: str = "") -> str:
    return (
        '{"id":"resp_68b5f2c1a2f48190a7c3e12f8e2f1c7d0c2f4a6b8d0e2f41","object":"response","created_at":1756754625,'
        f'"status":"{status}","background":false,"error":null,"incomplete_details":null,"instructions":null,'
        '"max_output_tokens":null,"max_tool_calls":null,"model":"gpt-5.5-2026-03-05","output":[],'
        '"parallel_tool_calls":true,"previous_response_id":null,"prompt_cache_key":"ses_abc",'
        '"reasoning":{"effort":"medium","summary":"auto"},"store":false,"temperature":1.0,'
        '"text":{"format":{"type":"text"},"verbosity":"low"},"tool_choice":"auto",'
        '"tools":[{"type":"function","name":"exec_command","description":"Run \\"type\\":\\"response.completed\\"","parameters":{"type":"object"},"strict":false}],'
        f'"top_p":1.0,"truncation":"disabled","usage":{usage},"user":null,"metadata":{{}}{extra}}}'
    )


RESPONSES_USAGE_JSON = '{"input_tokens":5210,"input_tokens_details":{"cached_tokens":4864},"output_tokens":318,"output_tokens_details":{"reasoning_tokens":256},"total_tokens":5528}'

RESPONSES_STREAM = sse(
    'event: response.created\ndata: {"type":"response.created","sequence_number":0,"response":' + _response("in_progress", "null") + "}",
    'event: response.in_progress\ndata: {"type":"response.in_progress","sequence_number":1,"response":' + _response("in_progress", "null") + "}",
    'event: response.output_item.added\ndata: {"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"id":"rs_68b5f2c2","type":"reasoning","encrypted_content":"gAAAAABos_LC","summary":[]}}',
    'event: response.output_item.done\ndata: {"type":"response.output_item.done","sequence_number":3,"output_index":0,"item":{"id":"rs_68b5f2c2","type":"reasoning","encrypted_content":"gAAAAABos_LCxyz","summary":[]}}',
    'event: response.output_item.added\ndata: {"type":"response.output_item.added","sequence_number":4,"output_index":1,"item":{"id":"fc_68b5f2c7","type":"function_call","status":"in_progress","arguments":"","call_id":"call_Xw1","name":"exec_command"}}',
    'event: response.function_call_arguments.delta\ndata: {"type":"response.function_call_arguments.delta","sequence_number":5,"item_id":"fc_68b5f2c7","output_index":1,"delta":"{\\"cmd\\":[\\"echo\\",","obfuscation":"k3"}',
    'event: response.function_call_arguments.delta\ndata: {"type":"response.function_call_arguments.delta","sequence_number":6,"item_id":"fc_68b5f2c7","output_index":1,"delta":"\\"}\\\\\\"usage\\\\\\":{\\"]}","obfuscation":"p"}',
    'event: response.function_call_arguments.done\ndata: {"type":"response.function_call_arguments.done","sequence_number":7,"item_id":"fc_68b5f2c7","output_index":1,"arguments":"{\\"cmd\\":[\\"echo\\",\\"}\\\\\\"usage\\\\\\":{\\"]}"}',
    'event: response.output_item.done\ndata: {"type":"response.output_item.done","sequence_number":8,"output_index":1,"item":{"id":"fc_68b5f2c7","type":"function_call","status":"completed","arguments":"{\\"cmd\\":[\\"echo\\"]}","call_id":"call_Xw1","name":"exec_command"}}',
    'event: response.completed\ndata: {"type":"response.completed","sequence_number":9,"response":' + _response("completed", RESPONSES_USAGE_JSON) + "}",
)
RESPONSES_USAGE = Usage(
    input_tokens=346,
    output_tokens=318,
    cache_read_tokens=4864,
    reasoning_tokens=256,
    model="gpt-5.5-2026-03-05",
    stop_reason="completed",
    reported=True,
)

RESPONSES_INCOMPLETE_STREAM = sse(
    'event: response.created\ndata: {"type":"response.created","sequence_number":0,"response":' + _response("in_progress", "null") + "}",
    'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":1,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Once upon","logprobs":[]}',
    'event: response.incomplete\ndata: {"type":"response.incomplete","sequence_number":2,"response":'
    + _response(
        "incomplete",
        '{"input_tokens":40,"input_tokens_details":{"cached_tokens":0},"output_tokens":64,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":104}',
    ).replace('"incomplete_details":null', '"incomplete_details":{"reason":"max_output_tokens"}')
    + "}",
)

RESPONSES_FAILED_STREAM = sse(
    'event: response.created\ndata: {"type":"response.created","sequence_number":0,"response":' + _response("in_progress", "null") + "}",
    'event: response.failed\ndata: {"type":"response.failed","sequence_number":1,"response":'
    + _response("failed", "null").replace(
        '"error":null', '"error":{"code":"server_error","message":"The model failed to generate a response."}'
    )
    + "}",
)

RESPONSES_ERROR_EVENT_STREAM = sse(
    'event: response.created\ndata: {"type":"response.created","sequence_number":0,"response":' + _response("in_progress", "null") + "}",
    'event: error\ndata: {"type":"error","code":"rate_limit_exceeded","message":"Rate limit reached","param":null,"sequence_number":1}',
)

RESPONSES_BODY = _response("completed", RESPONSES_USAGE_JSON).encode()


# --- Gemini ---------------------------------------------------------------------------------------

GEMINI_CHUNKS: list[dict[str, Any]] = [
    {
        "candidates": [
            {
                "content": {"parts": [{"text": "**Planning** the \"}],[{\\ answer", "thought": True}], "role": "model"},
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 4123,
            "totalTokenCount": 4350,
            "cachedContentTokenCount": 4000,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 4123}],
            "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 4000}],
            "thoughtsTokenCount": 227,
        },
        "modelVersion": "gemini-2.5-flash",
        "responseId": "kXG2aN3BFdKtz7IPvM2lqQQ",
    },
    {
        "candidates": [{"content": {"parts": [{"text": "Reading ünïcödé 文件 now."}], "role": "model"}, "index": 0}],
        "usageMetadata": {
            "promptTokenCount": 4123,
            "candidatesTokenCount": 6,
            "totalTokenCount": 4356,
            "cachedContentTokenCount": 4000,
            "thoughtsTokenCount": 227,
        },
        "modelVersion": "gemini-2.5-flash",
        "responseId": "kXG2aN3BFdKtz7IPvM2lqQQ",
    },
    {
        "candidates": [
            {
                "content": {
                    "parts": [
                        {
                            "functionCall": {"name": "read_file", "args": {"path": "hello.txt"}},
                            "thoughtSignature": "CiQB0e2Kb6sDk3v/8PjZ+w==",
                        }
                    ],
                    "role": "model",
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 4123,
            "candidatesTokenCount": 18,
            "totalTokenCount": 4368,
            "cachedContentTokenCount": 4000,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 4123}],
            "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 4000}],
            "thoughtsTokenCount": 227,
        },
        "modelVersion": "gemini-2.5-flash",
        "responseId": "kXG2aN3BFdKtz7IPvM2lqQQ",
    },
]
GEMINI_USAGE = Usage(
    input_tokens=123,
    output_tokens=245,
    cache_read_tokens=4000,
    reasoning_tokens=227,
    model="gemini-2.5-flash",
    stop_reason="STOP",
    reported=True,
)


def gemini_sse(chunks: list[dict[str, Any]]) -> bytes:
    # ?alt=sse: one line of JSON per event, CRLF line ends, raw UTF-8.
    return b"".join(
        b"data: " + json.dumps(c, separators=(",", ": "), ensure_ascii=False).encode() + b"\r\n\r\n" for c in chunks
    )


def gemini_array(chunks: list[dict[str, Any]]) -> bytes:
    # No alt: one pretty-printed JSON array, written element by element.
    return ("[" + "\n,\r\n".join(json.dumps(c, indent=2, ensure_ascii=False) for c in chunks) + "]").encode()


GEMINI_BODY = json.dumps(
    {
        "candidates": [
            {
                "content": {"parts": [{"text": '{"complexity_score": 1}'}], "role": "model"},
                "finishReason": "MAX_TOKENS",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 812,
            "candidatesTokenCount": 12,
            "totalTokenCount": 900,
            "toolUsePromptTokenCount": 40,
            "thoughtsTokenCount": 36,
        },
        "modelVersion": "gemini-3.5-flash-lite",
        "responseId": "a1",
    },
    indent=2,
).encode()

GEMINI_ERROR_BODY = b"""{
  "error": {
    "code": 429,
    "message": "You exceeded your current quota.",
    "status": "RESOURCE_EXHAUSTED"
  }
}
"""

GEMINI_BLOCKED_SSE = gemini_sse(
    [
        {
            "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
            "usageMetadata": {"promptTokenCount": 30, "totalTokenCount": 30},
            "modelVersion": "gemini-2.5-pro",
        }
    ]
)


# --- the same Usage from every chunking ------------------------------------------------------------

CASES: list[tuple[str, Dialect, bool, bytes, Usage]] = [
    ("anthropic-tool-stream", Dialect.ANTHROPIC, True, ANTHROPIC_TOOL_STREAM, ANTHROPIC_TOOL_USAGE),
    ("anthropic-tool-stream-no-event-names", Dialect.ANTHROPIC, True, without_event_names(ANTHROPIC_TOOL_STREAM), ANTHROPIC_TOOL_USAGE),
    ("anthropic-text-stream", Dialect.ANTHROPIC, True, ANTHROPIC_TEXT_STREAM, ANTHROPIC_TEXT_USAGE),
    ("anthropic-text-stream-crlf", Dialect.ANTHROPIC, True, ANTHROPIC_TEXT_STREAM.replace(b"\n", b"\r\n"), ANTHROPIC_TEXT_USAGE),
    (
        "anthropic-overloaded-mid-stream",
        Dialect.ANTHROPIC,
        True,
        ANTHROPIC_OVERLOADED_STREAM,
        Usage(input_tokens=410, output_tokens=1, model="claude-haiku-4-5-20251001", error="overloaded_error"),
    ),
    (
        "anthropic-body",
        Dialect.ANTHROPIC,
        False,
        ANTHROPIC_BODY,
        Usage(
            input_tokens=12,
            output_tokens=9,
            cache_read_tokens=4000,
            cache_write_5m_tokens=100,
            cache_write_1h_tokens=200,
            model="claude-sonnet-4-5-20250929",
            stop_reason="end_turn",
            reported=True,
        ),
    ),
    ("anthropic-error-body", Dialect.ANTHROPIC, True, ANTHROPIC_ERROR_BODY, Usage(error="rate_limit_error")),
    ("chat-text-stream", Dialect.OPENAI_CHAT, True, CHAT_TEXT_STREAM, CHAT_TEXT_USAGE),
    ("chat-tool-stream", Dialect.OPENAI_CHAT, True, CHAT_TOOL_STREAM, CHAT_TOOL_USAGE),
    (
        "chat-stream-without-usage",
        Dialect.OPENAI_CHAT,
        True,
        CHAT_NO_USAGE_STREAM,
        Usage(model="gpt-4.1-mini-2025-04-14", stop_reason="length"),
    ),
    (
        "chat-body",
        Dialect.OPENAI_CHAT,
        False,
        CHAT_BODY,
        Usage(
            input_tokens=99,
            output_tokens=10,
            cache_read_tokens=1920,
            model="gpt-4.1-2025-04-14",
            stop_reason="stop",
            reported=True,
        ),
    ),
    ("chat-error-body", Dialect.OPENAI_CHAT, True, CHAT_ERROR_BODY, Usage(error="context_length_exceeded")),
    ("responses-stream", Dialect.OPENAI_RESPONSES, True, RESPONSES_STREAM, RESPONSES_USAGE),
    ("responses-stream-no-event-names", Dialect.OPENAI_RESPONSES, True, without_event_names(RESPONSES_STREAM), RESPONSES_USAGE),
    (
        "responses-incomplete",
        Dialect.OPENAI_RESPONSES,
        True,
        RESPONSES_INCOMPLETE_STREAM,
        Usage(input_tokens=40, output_tokens=64, model="gpt-5.5-2026-03-05", stop_reason="max_output_tokens", reported=True),
    ),
    (
        "responses-failed",
        Dialect.OPENAI_RESPONSES,
        True,
        RESPONSES_FAILED_STREAM,
        Usage(model="gpt-5.5-2026-03-05", stop_reason="failed", error="server_error"),
    ),
    (
        "responses-error-event",
        Dialect.OPENAI_RESPONSES,
        True,
        RESPONSES_ERROR_EVENT_STREAM,
        Usage(model="gpt-5.5-2026-03-05", error="rate_limit_exceeded"),
    ),
    ("responses-body", Dialect.OPENAI_RESPONSES, False, RESPONSES_BODY, RESPONSES_USAGE),
    ("gemini-sse", Dialect.GEMINI, True, gemini_sse(GEMINI_CHUNKS), GEMINI_USAGE),
    ("gemini-array", Dialect.GEMINI, True, gemini_array(GEMINI_CHUNKS), GEMINI_USAGE),
    (
        "gemini-body",
        Dialect.GEMINI,
        False,
        GEMINI_BODY,
        Usage(
            input_tokens=852,
            output_tokens=48,
            reasoning_tokens=36,
            model="gemini-3.5-flash-lite",
            stop_reason="MAX_TOKENS",
            reported=True,
        ),
    ),
    ("gemini-error-body", Dialect.GEMINI, True, GEMINI_ERROR_BODY, Usage(error="RESOURCE_EXHAUSTED")),
    (
        "gemini-blocked-prompt",
        Dialect.GEMINI,
        True,
        GEMINI_BLOCKED_SSE,
        Usage(input_tokens=30, model="gemini-2.5-pro", stop_reason="PROHIBITED_CONTENT", reported=True),
    ),
]


@pytest.mark.parametrize(("dialect", "streaming", "stream", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_same_usage_for_every_chunking(dialect: Dialect, streaming: bool, stream: bytes, expected: Usage) -> None:
    for chunks in chunkings(stream):
        assert tap_usage(dialect, streaming, chunks) == expected


def test_fixtures_are_valid_json() -> None:
    # Guards the hand-written frames against typos that a lenient tap would hide.
    for _, _, _, stream, _ in CASES:
        if stream.lstrip()[:1] == b"[" or stream.lstrip()[:1] == b"{":
            json.loads(stream)
            continue
        for line in stream.replace(b"\r\n", b"\n").split(b"\n"):
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                json.loads(line[6:])


# --- truncated streams -------------------------------------------------------------------------------


def cut_before(stream: bytes, marker: bytes) -> bytes:
    return stream[: stream.index(marker)]


def test_anthropic_cut_before_message_delta_keeps_the_input_side() -> None:
    stream = cut_before(ANTHROPIC_TOOL_STREAM, b"event: message_delta")
    for chunks in chunkings(stream):
        assert tap_usage(Dialect.ANTHROPIC, True, chunks) == Usage(
            input_tokens=3,
            output_tokens=1,
            cache_read_tokens=18034,
            cache_write_1h_tokens=2154,
            model="claude-opus-4-8",
        )


def test_anthropic_cut_inside_the_usage_frame() -> None:
    stream = ANTHROPIC_TEXT_STREAM[: ANTHROPIC_TEXT_STREAM.index(b'"output_tokens":15') + 5]
    usage = tap_usage(Dialect.ANTHROPIC, True, [stream])
    assert usage.reported is False
    assert (usage.input_tokens, usage.output_tokens, usage.stop_reason) == (25, 1, None)


def test_last_event_without_its_blank_line_still_counts() -> None:
    stream = ANTHROPIC_TEXT_STREAM.rstrip(b"\n")
    assert tap_usage(Dialect.ANTHROPIC, True, [stream]) == ANTHROPIC_TEXT_USAGE
    chat = cut_before(CHAT_TEXT_STREAM, b"data: [DONE]").rstrip(b"\n")
    assert tap_usage(Dialect.OPENAI_CHAT, True, [chat]) == CHAT_TEXT_USAGE


def test_chat_cut_before_the_usage_chunk() -> None:
    stream = cut_before(CHAT_TEXT_STREAM, b'data: {"id":"chatcmpl-CNB1f6y3cpF0dDLn8Iwa1tbkKMvW3","object":"chat.completion.chunk","created":1759737311,"model":"gpt-4.1-mini-2025-04-14","service_tier":"default","system_fingerprint":"fp_4fce0778af","choices":[]')
    assert tap_usage(Dialect.OPENAI_CHAT, True, [stream]) == Usage(model="gpt-4.1-mini-2025-04-14", stop_reason="stop")


def test_responses_cut_before_completed_keeps_the_model() -> None:
    stream = cut_before(RESPONSES_STREAM, b"event: response.completed")
    for chunks in chunkings(stream)[:3]:
        assert tap_usage(Dialect.OPENAI_RESPONSES, True, chunks) == Usage(model="gpt-5.5-2026-03-05")


@pytest.mark.parametrize("framing", [gemini_sse, gemini_array], ids=["sse", "array"])
def test_gemini_cut_before_the_final_chunk_is_not_reported(framing: Any) -> None:
    stream = framing(GEMINI_CHUNKS[:2])
    if framing is gemini_array:
        stream = stream[:-1]  # and no closing bracket either
    usage = tap_usage(Dialect.GEMINI, True, [stream])
    assert usage == Usage(
        input_tokens=123, output_tokens=233, cache_read_tokens=4000, reasoning_tokens=227, model="gemini-2.5-flash"
    )


def test_gemini_array_cut_inside_the_last_element() -> None:
    stream = gemini_array(GEMINI_CHUNKS)
    stream = stream[: stream.rindex(b'"finishReason"')]
    usage = tap_usage(Dialect.GEMINI, True, [stream])
    assert (usage.reported, usage.output_tokens, usage.stop_reason) == (False, 233, None)


# --- garbage ------------------------------------------------------------------------------------------

GARBAGE = [
    b"",
    b"   \r\n  ",
    b"<html><head><title>502 Bad Gateway</title></head><body><center>nginx</center></body></html>\r\n",
    b"{not json",
    b'{"usage": "lots", "usageMetadata": [1], "choices": 7, "type": "message_start", "message": null}',
    b"null",
    b"[1, 2, {\"a\": [}}}]]]]] \\",
    b'[{"usageMetadata": {"promptTokenCount": "9"}}, "x", 3, {"error": 5}]',
    b"data: {broken\n\ndata: [DONE]\n\n",
    b'event: message_delta\ndata: {"type":"message_delta","delta":null,"usage":{"output_tokens":-5,"input_tokens":"7","cache_creation":[]}}\n\n',
    b'event: response.completed\ndata: {"type":"response.completed","response":{"usage":{"input_tokens":true}}}\n\n',
    b'data: {"choices":[null, 1, {"finish_reason": 3}], "usage": {"prompt_tokens_details": 4}}\n\n',
    b"data: " + b"[" * 100_000 + b"\n\n",
    b"\xef\xbb\xbf\x00\xff\xfe" * 50,
    bytes(random.Random(7).randrange(256) for _ in range(5000)),
]


@pytest.mark.parametrize("dialect", list(Dialect))
@pytest.mark.parametrize("garbage", GARBAGE, ids=[f"g{i}" for i in range(len(GARBAGE))])
def test_garbage_never_raises(dialect: Dialect, garbage: bytes) -> None:
    for streaming in (True, False):
        for chunks in chunkings(garbage)[:3] if len(garbage) < 10_000 else [[garbage]]:
            usage = tap_usage(dialect, streaming, chunks)
            assert isinstance(usage, Usage)
            assert usage.input_tokens >= 0 and usage.output_tokens >= 0


class _BrokenReader:
    def event(self, name: str, data: bytes) -> None:
        raise RuntimeError("bug")

    def body(self, obj: Any) -> None:
        raise RuntimeError("bug")

    def result(self) -> Usage:
        raise RuntimeError("bug")


def test_a_bug_in_a_reader_never_reaches_the_proxy() -> None:
    tap = Tap(_BrokenReader(), True)
    tap.feed(b"data: {}\n\n")
    tap.feed(b"data: {}\n\n")
    assert tap.finish() == Usage()


def test_finish_twice_gives_the_same_answer() -> None:
    tap = make_tap(Dialect.ANTHROPIC, True)
    tap.feed(ANTHROPIC_TEXT_STREAM)
    assert tap.finish() == tap.finish() == ANTHROPIC_TEXT_USAGE


# --- JSON array splitter --------------------------------------------------------------------------------


def test_array_splitter_yields_elements_as_they_close() -> None:
    splitter = JSONArraySplitter()
    assert splitter.feed(b'[{"a": "}\\"') == []  # a string holding a brace and a quote
    assert splitter.feed(b'{[", "b": [') == []
    assert splitter.feed(b'1]}\n,\r\n{"c": "\\\\"') == [b'{"a": "}\\"{[", "b": [1]}']
    assert splitter.feed(b"}") == [b'{"c": "\\\\"}']
    assert splitter.feed(b"]") == []


def test_array_splitter_escape_split_across_chunks() -> None:
    data = b'[{"t": "a\\"b\\\\"}, {"t": "\\u00e9"}]'
    for chunks in chunkings(data):
        splitter = JSONArraySplitter()
        elements = [e for c in chunks for e in splitter.feed(c)]
        assert [json.loads(e) for e in elements] == [{"t": 'a"b\\'}, {"t": "é"}]


def test_array_splitter_keeps_only_the_open_element() -> None:
    splitter = JSONArraySplitter()
    splitter.feed(b"[")
    for _ in range(1000):
        splitter.feed(b'{"x": 1},\n')
    splitter.feed(b'{"open": ')
    assert splitter.pending() == b'{"open": '


# --- hiding the usage chunk from a client that did not ask for it -----------------------------------------

CHUNK_IDS = '{"id":"chatcmpl-CNC7sZ4pm2uY0mwGf8Yq1bkL2Fj4k","object":"chat.completion.chunk","created":1759741520,"model":"gpt-4.1-mini-2025-04-14","service_tier":"default","system_fingerprint":"fp_4fce0778af",'
DELTAS = [
    ('{"role":"assistant","content":"","refusal":null}', "null", "Xa9"),
    ('{"content":"Sure"}', "null", "Q"),
    ('{"content":", \\"usage\\":null is text"}', "null", ""),
    ('{"content":" 🙂"}', "null", "kk"),
    ("{}", '"stop"', "Bd"),
]
USAGE_CHUNK = CHUNK_IDS + '"choices":[],"usage":{"prompt_tokens":50,"completion_tokens":7,"total_tokens":57,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"obfuscation":"m0Yv"}'


def openai_chat_stream(include_usage: bool) -> bytes:
    """What OpenAI writes for one completion, with and without include_usage."""
    usage_member = ',"usage":null' if include_usage else ""
    events = [
        "data: "
        + CHUNK_IDS
        + f'"choices":[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}]'
        + usage_member
        + f',"obfuscation":"{obf}"}}'
        for delta, finish, obf in DELTAS
    ]
    if include_usage:
        events.append("data: " + USAGE_CHUNK)
    events.append("data: [DONE]")
    return sse(*events)


def hide(chunks: list[bytes]) -> bytes:
    hider = UsageFrameHider()
    return b"".join(hider.feed(c) for c in chunks) + hider.finish()


def test_hider_output_is_the_stream_without_include_usage() -> None:
    upstream = openai_chat_stream(include_usage=True)
    expected = openai_chat_stream(include_usage=False)
    assert upstream != expected
    for chunks in chunkings(upstream):
        assert hide(chunks) == expected


def test_hider_with_literal_frames() -> None:
    expected = CHAT_TEXT_STREAM.replace(b',"usage":null', b"")
    expected = expected[: expected.index(b'data: {"id":"chatcmpl-CNB1f6y3cpF0dDLn8Iwa1tbkKMvW3","object":"chat.completion.chunk","created":1759737311,"model":"gpt-4.1-mini-2025-04-14","service_tier":"default","system_fingerprint":"fp_4fce0778af","choices":[]')] + b"data: [DONE]\n\n"
    for chunks in chunkings(CHAT_TEXT_STREAM):
        assert hide(chunks) == expected


def test_the_meter_reads_usage_from_what_the_client_never_sees() -> None:
    upstream = openai_chat_stream(include_usage=True)
    tap, hider = make_tap(Dialect.OPENAI_CHAT, True), UsageFrameHider()
    to_client = b""
    for chunk in chunkings(upstream)[3]:
        tap.feed(chunk)
        to_client += hider.feed(chunk)
    to_client += hider.finish()
    assert to_client == openai_chat_stream(include_usage=False)
    assert tap.finish() == Usage(
        input_tokens=50, output_tokens=7, model="gpt-4.1-mini-2025-04-14", stop_reason="stop", reported=True
    )


def test_hider_never_delays_a_complete_event() -> None:
    upstream = openai_chat_stream(include_usage=True).replace(b"\n", b"\r\n")
    hider = UsageFrameHider()
    for raw in upstream.split(b"\r\n\r\n")[:-1]:
        out = hider.feed(raw + b"\r\n\r\n")
        assert out == b"" or out.endswith(b"\r\n\r\n")
        if b'"choices":[]' not in raw:
            assert out == raw.replace(b',"usage":null', b"") + b"\r\n\r\n"
    assert hider.finish() == b""


def test_hider_holds_back_only_the_incomplete_event() -> None:
    hider = UsageFrameHider()
    first = b"data: " + CHUNK_IDS.encode() + b'"choices":[{"index":0,"delta":{},"finish_reason":null}],"usage":null}\n\n'
    assert hider.feed(first + b"data: {\"id\":") == first.replace(b',"usage":null', b"")
    assert hider.finish() == b'data: {"id":'


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        # usage as the first member
        (b'data: {"usage":null,"choices":[]}\n\n', b'data: {"choices":[]}\n\n'),
        # Azure's first chunk: empty choices for the prompt filter, usage null: kept.
        (
            b'data: {"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{}}],"usage":null}\n\n',
            b'data: {"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{}}]}\n\n',
        ),
        # spaced separators (Python json.dumps)
        (b'data: {"choices": [{"delta": {}}], "usage": null}\n\n', b'data: {"choices": [{"delta": {}}]}\n\n'),
        (b'data: {"choices": [], "usage": {"prompt_tokens": 1}}\n\n', b""),
        # unsure: two members named usage, or usage alongside choices
        (b'data: {"x":{"usage":null},"usage":null}\n\n', b'data: {"x":{"usage":null},"usage":null}\n\n'),
        (
            b'data: {"choices":[{"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":1}}\n\n',
            b'data: {"choices":[{"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":1}}\n\n',
        ),
        (b'data: {"choices":[],"usage":{broken\n\n', b'data: {"choices":[],"usage":{broken\n\n'),
        (b": keep-alive\n\n", b": keep-alive\n\n"),
        (b"data: [DONE]\n\n", b"data: [DONE]\n\n"),
    ],
)
def test_hide_usage_one_event(event: bytes, expected: bytes) -> None:
    assert hide_usage(event) == expected


def test_inject_stream_usage() -> None:
    body: dict[str, Any] = {"model": "m", "stream": True}
    assert inject_stream_usage(body) is True
    assert body["stream_options"] == {"include_usage": True}

    body = {"stream": True, "stream_options": {"include_obfuscation": False, "include_usage": False}}
    assert inject_stream_usage(body) is True
    assert body["stream_options"] == {"include_obfuscation": False, "include_usage": True}

    asked = {"stream": True, "stream_options": {"include_usage": True}}
    assert inject_stream_usage(asked) is False
    assert asked == {"stream": True, "stream_options": {"include_usage": True}}

    for untouched in ({"model": "m"}, {"stream": False}, {"stream": True, "stream_options": "yes"}):
        before = dict(untouched)
        assert inject_stream_usage(untouched) is False
        assert untouched == before
