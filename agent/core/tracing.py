"""Request and W3C trace identifiers for every response.

An inbound `traceparent` is continued (same trace id, our span a child of the
caller's); otherwise a new trace starts here.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


@dataclass(frozen=True, slots=True)
class TraceIds:
    request_id: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    flags: str = "01"

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    def headers(self, version: str) -> dict[str, str]:
        return {
            "X-Langwatch-Gateway-Version": version,
            "X-Langwatch-Request-Id": self.request_id,
            "Traceparent": self.traceparent,
            "X-Langwatch-Trace-Id": self.trace_id,
            "X-Langwatch-Span-Id": self.span_id,
        }


def new_request_id() -> str:
    return "req_" + secrets.token_hex(15)


def start_trace(inbound_traceparent: str | None) -> TraceIds:
    trace_id, parent, flags = None, None, "01"
    if inbound_traceparent:
        m = _TRACEPARENT.match(inbound_traceparent.strip().lower())
        if m and m[1] != "0" * 32 and m[2] != "0" * 16:
            trace_id, parent, flags = m[1], m[2], m[3]
    return TraceIds(
        request_id=new_request_id(),
        trace_id=trace_id or secrets.token_hex(16),
        span_id=secrets.token_hex(8),
        parent_span_id=parent,
        flags=flags,
    )
