"""Span records encoded as OTLP protobuf, then decoded back as a collector reads them."""

from __future__ import annotations

from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from agent import otlp
from agent.core.usage import Usage
from agent.otlp import decode_export_request

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"
PARENT = "00f067aa0ba902b7"


def _usage() -> Usage:
    return Usage(input_tokens=11, output_tokens=7, cache_read_tokens=100, cache_write_5m_tokens=20,
                 cache_write_1h_tokens=3, reasoning_tokens=2, model="claude-sonnet-4-5-20250929")


def _span(**overrides: object) -> dict:
    args: dict = dict(
        trace_id=TRACE, span_id=SPAN, parent_span_id=PARENT, request_id="req_abc", dialect="anthropic",
        provider="anthropic", request_model="claude-sonnet-4-5", response_model="claude-sonnet-4-5-20250929",
        start_ns=1_700_000_000_000_000_000, end_ns=1_700_000_001_500_000_000, usage=_usage(), cost_micro_usd=1234,
        client="claude-cli/2.0.14", status_code=200, project_id="proj_fake", virtual_key_id="vk_fake",
        labels=["engineering", "laptop"],
    )
    args.update(overrides)
    return otlp.build_span(**args)


def test_span_record_carries_the_notes_attributes() -> None:
    span = _span()
    assert span["name"] == "gen_ai.chat" and span["status"] == "ok"
    a = span["attributes"]
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "anthropic/claude-sonnet-4-5"
    assert a["gen_ai.usage.input_tokens"] == 11
    assert a["gen_ai.usage.output_tokens"] == 7
    assert a["gen_ai.usage.total_tokens"] == 11 + 7 + 100 + 23
    assert a["gen_ai.usage.cache_read.input_tokens"] == 100
    assert a["gen_ai.usage.cache_creation.input_tokens"] == 20
    assert a["gen_ai.usage.cache_creation_1h.input_tokens"] == 3
    assert a["gen_ai.usage.cost"] == 1234
    assert a["langwatch.virtual_key_id"] == "vk_fake"
    assert a["langwatch.gateway_request_id"] == "req_abc"
    assert a["langwatch.labels"] == ["engineering", "laptop"]
    assert a["user_agent.original"] == "claude-cli/2.0.14"
    assert a["http.response.status_code"] == 200
    assert "error.type" not in a and "gen_ai.input.messages" not in a


def test_failed_call_has_error_type_and_error_status() -> None:
    span = _span(status_code=529, error_type="overloaded_error", dialect="gemini", provider="gemini")
    assert span["name"] == "gen_ai.generate_content"
    assert span["status"] == "error" and span["attributes"]["error.type"] == "overloaded_error"


def test_content_only_when_asked_and_redacted() -> None:
    secret_messages = [{"role": "user", "content": "my key is sk-ant-api03-abcdefghijklmnop and AKIAABCDEFGHIJKLMNOP, "
                                                  "password=hunter2hunter2, local gvn-0123456789abcdef"}]
    assert "gen_ai.input.messages" not in _span(input_messages=secret_messages)["attributes"]
    span = _span(input_messages=secret_messages, output_messages="Bearer abcdefghijklmnopqrstuvwxyz",
                 capture_content=True, secrets=["hunter2hunter2"])
    text = span["attributes"]["gen_ai.input.messages"]
    assert "sk-ant-" not in text and "AKIA" not in text and "hunter2" not in text and "gvn-0123" not in text
    assert "my key is [REDACTED]" in text
    assert span["attributes"]["gen_ai.output.messages"] == "Bearer [REDACTED]"


def test_export_request_round_trips_through_the_collector_schema() -> None:
    records = [_span(), _span(span_id="1111111111111111", parent_span_id=None, status_code=500, error_type="provider_error")]
    data = otlp.encode_export_request(records, resource={"service.name": "governor", "service.version": "0.1.0"},
                                      scope_version="0.1.0")
    resource, spans = decode_export_request(data)
    assert resource == {"service.name": "governor", "service.version": "0.1.0"}
    assert len(spans) == 2
    first, second = spans
    assert first["trace_id"] == TRACE and first["span_id"] == SPAN and first["parent_span_id"] == PARENT
    assert first["kind"] == Span.SPAN_KIND_CLIENT and first["scope"] == "governor"
    assert first["start_ns"] == 1_700_000_000_000_000_000 and first["end_ns"] == 1_700_000_001_500_000_000
    assert first["attributes"] == records[0]["attributes"]
    assert first["status_code"] == Status.STATUS_CODE_OK
    assert second["parent_span_id"] is None
    assert second["status_code"] == Status.STATUS_CODE_ERROR and second["status_message"] == "provider_error"


def test_no_secret_reaches_the_encoded_bytes() -> None:
    data = otlp.encode_export_request([_span(capture_content=True, input_messages="sk-proj-ABCDEFGHIJKLMNOPQRSTUV")])
    assert b"sk-proj-" not in data
