"""Last: when a forwarded call ends (completed, failed, or the client went away),
settle what it used. Partial usage of a cut stream is still recorded."""

from __future__ import annotations

import logging
import time

from mitmproxy import http

from addons.respond import context
from agent.core.usage import Usage
from agent.request import RequestContext
from agent.state import CallRecord, GatewayState

log = logging.getLogger("governor.record")


class Record:
    def __init__(self, state: GatewayState):
        self.state = state

    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow, None)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow, flow.error.msg if flow.error else "error")

    def _finish(self, flow: http.HTTPFlow, error: str | None) -> None:
        ctx = context(flow)
        if ctx is None or not ctx.forwarded or ctx.recorded:
            return
        ctx.recorded = True
        self.state.inflight -= 1
        ctx.usage = ctx.tap.finish() if ctx.tap is not None else Usage(model=ctx.model)
        ctx.error = ctx.error or error
        call = _call_record(ctx)
        self.state.recent_calls.append(call)
        u = call.usage
        log.info(
            "call request_id=%s client=%s model=%s status=%s in=%d out=%d cache_read=%d cache_write=%d "
            "reasoning=%d ttfb_ms=%s duration_ms=%.1f error=%s",
            call.request_id, call.client, call.model, call.status, u.input_tokens, u.output_tokens,
            u.cache_read_tokens, u.cache_write_tokens, u.reasoning_tokens,
            f"{call.ttfb_ms:.1f}" if call.ttfb_ms is not None else "-", call.duration_ms, call.error,
        )


def _call_record(ctx: RequestContext) -> CallRecord:
    assert ctx.endpoint is not None and ctx.usage is not None
    if ctx.usage.model is None:
        ctx.usage.model = ctx.model
    return CallRecord(
        request_id=ctx.ids.request_id,
        started_at=ctx.started_at,
        dialect=ctx.endpoint.dialect.value,
        provider=ctx.endpoint.provider.value,
        model=ctx.usage.model or ctx.model,
        client=ctx.client,
        stream=ctx.stream,
        status=ctx.status,
        usage=ctx.usage,
        ttfb_ms=ctx.ttfb_ms,
        duration_ms=(time.perf_counter() - ctx.started_mono) * 1000,
        error=ctx.error,
    )
