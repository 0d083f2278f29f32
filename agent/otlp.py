"""OTLP/HTTP protobuf for the one `gen_ai.*` span Governor sends per call.

Two halves, both pure (no I/O):

- `build_span(...)` turns what the pipeline knows about a finished call into a
  *span record*: a small JSON-able dict that the record step writes to the
  store's outbox. No credential ever enters it; message content only when the
  bundle asks for it, and then with secrets redacted.
- `encode_export_request(records, ...)` turns span records into the bytes of an
  `ExportTraceServiceRequest`, built with the OpenTelemetry project's own
  protobuf classes (`opentelemetry-proto`), so the wire matches every collector.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

__all__ = [
    "build_span",
    "decode_export_request",
    "encode_export_request",
    "operation_name",
    "redact",
]

# -- wire format --------------------------------------------------------------


def _any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, (list, tuple)):
        return AnyValue(array_value=ArrayValue(values=[_any_value(v) for v in value]))
    return AnyValue(string_value=str(value))


def _attributes(attrs: Mapping[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=_any_value(v)) for k, v in attrs.items() if v is not None]


def _span(record: Mapping[str, Any]) -> Span:
    failed = record.get("status") == "error"
    return Span(
        trace_id=bytes.fromhex(record["trace_id"]),
        span_id=bytes.fromhex(record["span_id"]),
        parent_span_id=bytes.fromhex(record["parent_span_id"]) if record.get("parent_span_id") else b"",
        name=record["name"],
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=int(record["start_ns"]),
        end_time_unix_nano=int(record["end_ns"]),
        attributes=_attributes(record.get("attributes") or {}),
        status=Status(
            code=Status.STATUS_CODE_ERROR if failed else Status.STATUS_CODE_OK,
            message=str(record.get("status_message") or ""),
        ),
    )


def encode_export_request(
    records: Iterable[Mapping[str, Any]],
    *,
    resource: Mapping[str, Any] | None = None,
    scope_name: str = "governor",
    scope_version: str = "",
) -> bytes:
    """One ResourceSpans (this agent) with one ScopeSpans holding every record's span."""
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=_attributes(resource or {})),
                scope_spans=[
                    ScopeSpans(
                        scope=InstrumentationScope(name=scope_name, version=scope_version),
                        spans=[_span(r) for r in records],
                    )
                ],
            )
        ]
    )
    return bytes(request.SerializeToString())


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def decode_export_request(data: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(resource attributes, span records) of an ExportTraceServiceRequest: the
    collector's view, for the tests and the fake control plane."""
    request = ExportTraceServiceRequest.FromString(data)
    resource: dict[str, Any] = {}
    spans: list[dict[str, Any]] = []
    for rs in request.resource_spans:
        resource.update({kv.key: _value(kv.value) for kv in rs.resource.attributes})
        for ss in rs.scope_spans:
            for span in ss.spans:
                spans.append(
                    {
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex() or None,
                        "name": span.name,
                        "kind": span.kind,
                        "start_ns": span.start_time_unix_nano,
                        "end_ns": span.end_time_unix_nano,
                        "attributes": {kv.key: _value(kv.value) for kv in span.attributes},
                        "status_code": span.status.code,
                        "status_message": span.status.message or None,
                        "scope": ss.scope.name or None,
                    }
                )
    return resource, spans


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
