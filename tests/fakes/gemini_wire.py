"""Gemini API (generativelanguage.googleapis.com), spelled as Google does.

Google's JSON printer writes `"key": value` with a space after the colon and
escapes `<`, `>` and `&` as `\\u003c`…; multi-line (two-space indent) for plain
JSON bodies, one line (`": "`, `,` without space) inside SSE frames.

- `:streamGenerateContent?alt=sse`: `data: <one-line json>\\r\\n\\r\\n` frames, no
  `[DONE]`; the stream simply ends. Every chunk carries `usageMetadata`
  (candidates cumulative), the last candidate carries `finishReason`.
- `:streamGenerateContent` without `alt`: one JSON array, streamed element by
  element: `[{…}` then `\\r\\n,{…}` … then `\\r\\n]`.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from tests.fakes.scenario import FakeUsage, Reply, TextAnswer, split

SSE_CONTENT_TYPE = "text/event-stream"
JSON_CONTENT_TYPE = "application/json; charset=UTF-8"
# Gemini 2.5+/3 attach a thought signature to function calls; clients must echo it.
THOUGHT_SIGNATURE = base64.b64encode(b"fake-thought-signature").decode()

STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
MESSAGES = {
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
}


def _google_escape(text: str) -> str:
    # Only legal inside JSON strings, so a plain replace is safe.
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def one_line(obj: Any) -> bytes:
    return _google_escape(json.dumps(obj, separators=(",", ": "), ensure_ascii=False)).encode()


def pretty(obj: Any) -> bytes:
    return _google_escape(json.dumps(obj, indent=2, ensure_ascii=False)).encode()


def usage_metadata(u: FakeUsage, candidates: int | None = None) -> dict[str, Any]:
    """Gemini counts: promptTokenCount includes the cached part; zero fields are omitted."""
    cand = u.visible_output_tokens if candidates is None else candidates
    meta: dict[str, Any] = {
        "promptTokenCount": u.prompt_total,
        "candidatesTokenCount": cand,
        "totalTokenCount": u.prompt_total + cand + u.reasoning_tokens,
    }
    if u.cache_read_tokens:
        meta["cachedContentTokenCount"] = u.cache_read_tokens
    meta["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": u.prompt_total}]
    if u.cache_read_tokens:
        meta["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": u.cache_read_tokens}]
    if u.reasoning_tokens:
        meta["thoughtsTokenCount"] = u.reasoning_tokens
    return meta


def _chunk(reply: Reply, parts: list[Any], finish: bool, usage: dict[str, Any]) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
    if finish:
        candidate["finishReason"] = "STOP"
    candidate["index"] = 0
    return {
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": reply.model,
        "responseId": reply.id("", 23),
    }


def _function_call_part(reply: Reply) -> dict[str, Any]:
    call = reply.scenario
    assert not isinstance(call, TextAnswer)
    return {"functionCall": {"name": call.name, "args": call.arguments}, "thoughtSignature": THOUGHT_SIGNATURE}


def chunks(reply: Reply) -> list[dict[str, Any]]:
    """The GenerateContentResponse objects of a streamed answer, in order."""
    u = reply.usage
    scenario = reply.scenario
    if not isinstance(scenario, TextAnswer):
        # Function calls arrive whole, in one chunk, never as partial args.
        return [_chunk(reply, [_function_call_part(reply)], True, usage_metadata(u))]
    pieces = split(scenario.text, reply.text_deltas)
    out = []
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        so_far = u.visible_output_tokens * (i + 1) // len(pieces)
        out.append(_chunk(reply, [{"text": piece}], last, usage_metadata(u, so_far)))
    return out


def sse_frames(reply: Reply) -> list[bytes]:
    return [b"data: " + one_line(c) + b"\r\n\r\n" for c in chunks(reply)]


def array_frames(reply: Reply) -> list[bytes]:
    items = chunks(reply)
    frames = [b"[" + pretty(items[0])]
    frames += [b"\r\n," + pretty(c) for c in items[1:]]
    frames.append(b"\r\n]")
    return frames


def generate_body(reply: Reply) -> bytes:
    scenario = reply.scenario
    parts = [{"text": scenario.text}] if isinstance(scenario, TextAnswer) else [_function_call_part(reply)]
    return pretty(_chunk(reply, parts, True, usage_metadata(reply.usage)))


def count_tokens_body(u: FakeUsage) -> bytes:
    return pretty({"totalTokens": u.prompt_total, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": u.prompt_total}]})


MODELS = [
    ("gemini-2.5-flash", "Gemini 2.5 Flash", 1048576, 65536),
    ("gemini-2.5-pro", "Gemini 2.5 Pro", 1048576, 65536),
    ("gemini-3.8-flash", "Gemini 3.8 Flash", 1048576, 65536),
]


def models_body() -> bytes:
    models = [
        {
            "name": f"models/{mid}",
            "version": "001",
            "displayName": name,
            "description": f"Fake {name}",
            "inputTokenLimit": inp,
            "outputTokenLimit": out,
            "supportedGenerationMethods": ["generateContent", "countTokens", "createCachedContent", "batchGenerateContent"],
            "temperature": 1,
            "topP": 0.95,
            "topK": 64,
            "maxTemperature": 2,
            "thinking": True,
        }
        for mid, name, inp, out in MODELS
    ]
    return pretty({"models": models})


def error_body(status: int, message: str | None) -> bytes:
    text = message or MESSAGES.get(status, STATUSES.get(status, "UNKNOWN").replace("_", " ").capitalize() + ".")
    return pretty({"error": {"code": status, "message": text, "status": STATUSES.get(status, "UNKNOWN")}})


def stream_error(message: str | None, array: bool) -> bytes:
    """An error inside a 200 stream: an `error` object where the next chunk would be."""
    obj = {"error": {"code": 503, "message": message or MESSAGES[503], "status": "UNAVAILABLE"}}
    return b"\r\n," + pretty(obj) if array else b"data: " + one_line(obj) + b"\r\n\r\n"


def bad_key_body() -> bytes:
    """What Google answers (HTTP 400, not 401) for a wrong API key."""
    return pretty(
        {
            "error": {
                "code": 400,
                "message": "API key not valid. Please pass a valid API key.",
                "status": "INVALID_ARGUMENT",
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                        "metadata": {"service": "generativelanguage.googleapis.com"},
                    }
                ],
            }
        }
    )


def missing_key_body() -> bytes:
    """What Google answers (HTTP 403) when no key is sent at all."""
    return error_body(
        403,
        "Method doesn't allow unregistered callers (callers without established identity). "
        "Please use API Key or other form of API consumer identity to call this API.",
    )
