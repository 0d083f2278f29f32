"""OTLP/HTTP protobuf for the one `gen_ai.*` span Governor sends per call.

Two halves, both pure (no I/O):

- `build_span(...)` turns what the pipeline knows about a finished call into a
  *span record*: a small JSON-able dict that the record step writes to the
  store's outbox in the same transaction as the ledger change. No credential
  ever enters it; message content only when the bundle asks for it, and then
  with secrets redacted.
- `encode_export_request(records, ...)` turns span records into the bytes of an
  `opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest`, encoded
  by hand: only the few messages and fields below are needed, and proto3's wire
  format for them is varints, fixed64 and length-delimited fields. Field numbers
  follow opentelemetry-proto v1 (`trace.proto`, `common.proto`,
  `resource.proto`):

      ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }
      ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2; }
      Resource      { repeated KeyValue attributes = 1; }
      ScopeSpans    { InstrumentationScope scope = 1; repeated Span spans = 2; }
      InstrumentationScope { string name = 1; string version = 2; }
      Span { bytes trace_id = 1; bytes span_id = 2; bytes parent_span_id = 4;
             string name = 5; SpanKind kind = 6; fixed64 start_time_unix_nano = 7;
             fixed64 end_time_unix_nano = 8; repeated KeyValue attributes = 9;
             Status status = 15; }
      Status   { string message = 2; StatusCode code = 3; }
      KeyValue { string key = 1; AnyValue value = 2; }
      AnyValue { string string_value = 1; bool bool_value = 2; int64 int_value = 3;
                 double double_value = 4; ArrayValue array_value = 5; }
      ArrayValue { repeated AnyValue values = 1; }

`decode_message` is a schema-less reader of the same wire format, used by the
tests and the fake control plane to check what was sent.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "SPAN_KIND_CLIENT",
    "STATUS_ERROR",
    "STATUS_OK",
    "build_span",
    "decode_message",
    "encode_export_request",
    "operation_name",
    "redact",
]

SPAN_KIND_CLIENT = 3
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2

# -- wire format --------------------------------------------------------------

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 negatives are ten-byte two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint((field << 3) | wire_type)


def _len_field(field: int, payload: bytes) -> bytes:
    return _key(field, _LEN) + _varint(len(payload)) + payload


def _str_field(field: int, text: str) -> bytes:
    return _len_field(field, text.encode("utf-8"))


def _fixed64_field(field: int, value: int) -> bytes:
    return _key(field, _FIXED64) + struct.pack("<Q", value)


def _any_value(value: Any) -> bytes:
    if isinstance(value, bool):
        return _key(2, _VARINT) + _varint(int(value))
    if isinstance(value, int):
        return _key(3, _VARINT) + _varint(value)
    if isinstance(value, float):
        return _key(4, _FIXED64) + struct.pack("<d", value)
    if isinstance(value, (list, tuple)):
        return _len_field(5, b"".join(_len_field(1, _any_value(v)) for v in value))
    return _str_field(1, str(value))


def _key_value(key: str, value: Any) -> bytes:
    return _str_field(1, key) + _len_field(2, _any_value(value))


def _attributes(field: int, attrs: Mapping[str, Any]) -> bytes:
    return b"".join(_len_field(field, _key_value(k, v)) for k, v in attrs.items() if v is not None)


def _span(record: Mapping[str, Any]) -> bytes:
    out = bytearray()
    out += _len_field(1, bytes.fromhex(record["trace_id"]))
    out += _len_field(2, bytes.fromhex(record["span_id"]))
    if record.get("parent_span_id"):
        out += _len_field(4, bytes.fromhex(record["parent_span_id"]))
    out += _str_field(5, record["name"])
    out += _key(6, _VARINT) + _varint(SPAN_KIND_CLIENT)
    out += _fixed64_field(7, int(record["start_ns"]))
    out += _fixed64_field(8, int(record["end_ns"]))
    out += _attributes(9, record.get("attributes") or {})
    status = bytearray()
    if record.get("status_message"):
        status += _str_field(2, str(record["status_message"]))
    code = STATUS_ERROR if record.get("status") == "error" else STATUS_OK
    status += _key(3, _VARINT) + _varint(code)
    out += _len_field(15, bytes(status))
    return bytes(out)


def encode_export_request(
    records: Iterable[Mapping[str, Any]],
    *,
    resource: Mapping[str, Any] | None = None,
    scope_name: str = "governor",
    scope_version: str = "",
) -> bytes:
    """One ResourceSpans (this agent) with one ScopeSpans holding every record's span."""
    spans = b"".join(_len_field(2, _span(r)) for r in records)
    scope = _str_field(1, scope_name) + (_str_field(2, scope_version) if scope_version else b"")
    scope_spans = _len_field(1, scope) + spans
    resource_msg = _attributes(1, resource or {})
    resource_spans = _len_field(1, resource_msg) + _len_field(2, scope_spans)
    return _len_field(1, resource_spans)


def decode_message(data: bytes) -> list[tuple[int, int, Any]]:
    """Schema-less decode: `[(field, wire_type, value)]`; LEN values stay bytes.

    Raises ValueError on truncated or malformed input.
    """
    fields: list[tuple[int, int, Any]] = []
    pos, end = 0, len(data)

    def varint() -> int:
        nonlocal pos
        shift = result = 0
        while True:
            if pos >= end or shift > 63:
                raise ValueError("truncated varint")
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7

    while pos < end:
        key = varint()
        field, wire_type = key >> 3, key & 7
        if field == 0:
            raise ValueError("field number 0")
        if wire_type == _VARINT:
            value: Any = varint()
        elif wire_type == _FIXED64:
            if pos + 8 > end:
                raise ValueError("truncated fixed64")
            value = data[pos : pos + 8]
            pos += 8
        elif wire_type == _LEN:
            size = varint()
            if pos + size > end:
                raise ValueError("truncated length-delimited field")
            value = data[pos : pos + size]
            pos += size
        elif wire_type == _FIXED32:
            if pos + 4 > end:
                raise ValueError("truncated fixed32")
            value = data[pos : pos + 4]
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
        fields.append((field, wire_type, value))
    return fields


# -- span records -------------------------------------------------------------

_OPERATIONS = {
    "anthropic": "chat",
    "openai_chat": "chat",
    "openai_responses": "responses",
    "gemini": "generate_content",
}


def operation_name(dialect: str) -> str:
    """`gen_ai.operation.name` for a dialect (the span is named `gen_ai.<operation>`)."""
    return _OPERATIONS.get(dialect, "chat")


# Credentials that must never leave the laptop inside captured content.
_SECRET_PATTERNS = [
    re.compile(r"sk-ant-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"sk-(?:proj-|svcacct-|lw-)?[A-Za-z0-9_\-]{16,}"),
    re.compile(r"(?:vk|ik)-lw-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"gvn-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"AIza[0-9A-Za-z_\-]{30,}"),
    re.compile(r"(?:AKIA|ASIA)[0-9A-Z]{16}"),
    re.compile(r"gh[pousr]_[A-Za-z0-9]{30,}"),
    re.compile(r"xox[abposr]-[A-Za-z0-9\-]{10,}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/\-]{16,}=*"),
    re.compile(r"eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),  # JWT
    re.compile(
        r"(?i)((?:api[_-]?key|secret|password|passwd|token|access[_-]?key)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;]{6,}"
    ),
]
REDACTED = "[REDACTED]"


def redact(text: str, extra_secrets: Sequence[str] = ()) -> str:
    """Replace credentials (known key shapes, `key=value` secrets, given literals) with [REDACTED]."""
    for literal in extra_secrets:
        if literal and len(literal) >= 6:
            text = text.replace(literal, REDACTED)
    for pattern in _SECRET_PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
        else:
            text = pattern.sub(REDACTED, text)
    return text


def build_span(
    *,
    trace_id: str,
    span_id: str,
    parent_span_id: str | None,
    request_id: str,
    dialect: str,
    provider: str,
    request_model: str | None,
    response_model: str | None,
    start_ns: int,
    end_ns: int,
    usage: Any,
    cost_micro_usd: int | None,
    client: str,
    status_code: int | None,
    error_type: str | None = None,
    project_id: str | None = None,
    virtual_key_id: str | None = None,
    model_provider_id: str | None = None,
    labels: Sequence[str] = (),
    requested_model: str | None = None,
    end_user_id: str | None = None,
    conversation_id: str | None = None,
    input_messages: Any = None,
    output_messages: Any = None,
    capture_content: bool = False,
    secrets: Sequence[str] = (),
) -> dict[str, Any]:
    """The span record for one call (notes §6 attributes). `usage` is an `agent.core.usage.Usage`.

    Content (`input_messages` / `output_messages`, any JSON-able value) is kept
    only when `capture_content` is true, serialised to JSON and passed through
    `redact` with `secrets` (the local key, provider keys, the VK) as literals.
    """
    op = operation_name(dialect)
    qualified = request_model if not request_model or "/" in request_model else f"{provider}/{request_model}"
    attrs: dict[str, Any] = {
        "langwatch.project_id": project_id,
        "gen_ai.operation.name": op,
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": qualified,
        "gen_ai.response.model": response_model,
        "gen_ai.usage.input_tokens": usage.input_tokens,
        "gen_ai.usage.output_tokens": usage.output_tokens,
        "gen_ai.usage.total_tokens": usage.total_tokens,
        "gen_ai.usage.cache_read.input_tokens": usage.cache_read_tokens,
        "gen_ai.usage.cache_creation.input_tokens": usage.cache_write_5m_tokens,
        "gen_ai.usage.cache_creation_1h.input_tokens": usage.cache_write_1h_tokens,
        "gen_ai.usage.reasoning_tokens": usage.reasoning_tokens,
        "gen_ai.usage.cost": cost_micro_usd,
        "langwatch.virtual_key_id": virtual_key_id,
        "langwatch.gateway_request_id": request_id,
        "langwatch.model_provider_id": model_provider_id,
        "langwatch.labels": list(labels) if labels else None,
        "langwatch.requested_model": requested_model if requested_model and requested_model != request_model else None,
        "langwatch.end_user_id": end_user_id,
        "gen_ai.conversation.id": conversation_id,
        "langwatch.origin": "governor",
        "user_agent.original": client,
        "http.response.status_code": status_code,
    }
    failed = error_type is not None or (status_code is not None and status_code >= 400)
    if failed:
        attrs["error.type"] = error_type or str(status_code)
    if capture_content:
        for key, value in (("gen_ai.input.messages", input_messages), ("gen_ai.output.messages", output_messages)):
            if value is not None:
                text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
                attrs[key] = redact(text, secrets)
    return {
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": parent_span_id,
        "name": f"gen_ai.{op}",
        "start_ns": int(start_ns),
        "end_ns": int(end_ns),
        "status": "error" if failed else "ok",
        "status_message": error_type if failed else None,
        "attributes": {k: v for k, v in attrs.items() if v is not None},
    }
