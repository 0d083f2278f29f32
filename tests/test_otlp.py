"""The hand-written OTLP protobuf encoder: wire-format vectors, then whole requests decoded back."""

from __future__ import annotations

import struct

import pytest

from agent import otlp
from agent.core.usage import Usage
from tests.fakes.controlplane import decode_export_request

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"
PARENT = "00f067aa0ba902b7"


def test_varint_vectors_from_the_protobuf_encoding_guide() -> None:
    assert otlp._varint(0) == b"\x00"
    assert otlp._varint(1) == b"\x01"
    assert otlp._varint(150) == b"\x96\x01"  # the guide's example
    assert otlp._varint(300) == b"\xac\x02"
    assert otlp._varint(-1) == b"\xff" * 9 + b"\x01"  # int64 -1: ten bytes


def test_field_vectors() -> None:
    # message Test1 { int32 a = 1; } with a = 150  ->  08 96 01
    assert otlp._key(1, 0) + otlp._varint(150) == bytes.fromhex("089601")
    # message Test2 { string b = 2; } with b = "testing"  ->  12 07 74 65 73 74 69 6e 67
    assert otlp._str_field(2, "testing") == bytes.fromhex("120774657374696e67")
    assert otlp._fixed64_field(7, 1) == b"\x39" + struct.pack("<Q", 1)  # (7 << 3) | 1 = 0x39


def test_any_value_kinds() -> None:
    assert otlp._any_value("a") == b"\x0a\x01a"
    assert otlp._any_value(True) == b"\x10\x01"
    assert otlp._any_value(5) == b"\x18\x05"
    assert otlp._any_value(0.5) == b"\x21" + struct.pack("<d", 0.5)
    assert otlp._any_value(["x"]) == b"\x2a\x05" + b"\x0a\x03" + b"\x0a\x01x"


def test_decode_message_rejects_truncation() -> None:
    with pytest.raises(ValueError):
        otlp.decode_message(b"\x0a\x05ab")
    with pytest.raises(ValueError):
        otlp.decode_message(b"\x96")


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


def test_export_request_round_trips_through_an_independent_structural_decoder() -> None:
    records = [_span(), _span(span_id="1111111111111111", parent_span_id=None, status_code=500, error_type="provider_error")]
    data = otlp.encode_export_request(records, resource={"service.name": "governor", "service.version": "0.1.0"},
                                      scope_version="0.1.0")
    resource, spans = decode_export_request(data)
    assert resource == {"service.name": "governor", "service.version": "0.1.0"}
    assert len(spans) == 2
    first, second = spans
    assert first["trace_id"] == TRACE and first["span_id"] == SPAN and first["parent_span_id"] == PARENT
    assert first["kind"] == otlp.SPAN_KIND_CLIENT and first["scope"] == "governor"
    assert first["start_ns"] == 1_700_000_000_000_000_000 and first["end_ns"] == 1_700_000_001_500_000_000
    assert first["attributes"] == records[0]["attributes"]
    assert first["status_code"] == otlp.STATUS_OK
    assert second["parent_span_id"] is None
    assert second["status_code"] == otlp.STATUS_ERROR and second["status_message"] == "provider_error"


def test_no_secret_reaches_the_encoded_bytes() -> None:
    data = otlp.encode_export_request([_span(capture_content=True, input_messages="sk-proj-ABCDEFGHIJKLMNOPQRSTUV")])
    assert b"sk-proj-" not in data
