"""Last: when a forwarded call ends (completed, failed, or the client went away),
settle what it used in the ledger. Partial usage of a cut stream is still billed."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from mitmproxy import http

from addons.respond import context
from agent.core.prices import cost_nano_usd
from agent.core.transcript import request_messages
from agent.core.usage import Usage
from agent.otlp import build_span
from agent.request import RequestContext
from agent.state import CallRecord, GatewayState

log = logging.getLogger("governor.record")


class Record:
    def __init__(self, state: GatewayState):
        self.state = state
        # Settlements run beside the proxy so the client's stream end never waits on SQLite;
        # drain waits for them (they are counted in `inflight` until written).
        self._pending: set[asyncio.Task[None]] = set()

    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow, None)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow, flow.error.msg if flow.error else "error")

    def _finish(self, flow: http.HTTPFlow, error: str | None) -> None:
        ctx = context(flow)
        if ctx is None or not ctx.forwarded or ctx.recorded:
            return
        ctx.recorded = True
        ctx.usage = ctx.tap.finish() if ctx.tap is not None else Usage(model=ctx.model)
        ctx.error = ctx.error or error or ctx.usage.error
        call = _call_record(ctx)
        self.state.recent_calls.append(call)
        _log_call(call)
        task = asyncio.get_running_loop().create_task(self._settle(ctx, call))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _settle(self, ctx: RequestContext, call: CallRecord) -> None:
        try:
            plan = ctx.admission
            if plan is None:
                return
            usage = call.usage
            cost: int | None = None
            if usage.total_tokens > 0:  # the provider billed it, even if the stream was cut
                cost = cost_nano_usd(usage, plan.quote)
                call.cost_nano_usd = cost  # the spend page shows it per call
                await self.state.store.settle(
                    call.request_id, cost, usage, client=call.client, provider=call.provider,
                    priced_by_fallback=plan.quote.priced_by_fallback, duration_ms=int(call.duration_ms),
                )
            else:
                error = {"type": ctx.error or "no_usage", "http_status": call.status or 502}
                await self.state.store.release(call.request_id, error, client=call.client, provider=call.provider)
            if self.state.control_plane is not None:
                await self.state.store.enqueue("span", f"span:{call.request_id}", self._span(ctx, call, cost))
                self.state.control_plane.exporter.wake()  # deliver now, not at the next idle tick
        except Exception:
            # The reservation stays and is reclaimed at the next start; the call itself is done.
            log.exception("settle_failed request_id=%s", call.request_id)
        finally:
            self.state.inflight -= 1


    def _span(self, ctx: RequestContext, call: CallRecord, cost_nano: int | None) -> dict[str, object]:
        bundle = self.state.bundle
        started_ns = int(ctx.started_at * 1e9)
        return build_span(
            trace_id=ctx.ids.trace_id,
            span_id=ctx.ids.span_id,
            parent_span_id=ctx.ids.parent_span_id,
            request_id=call.request_id,
            dialect=call.dialect,
            provider=call.provider,
            request_model=ctx.model,
            response_model=call.usage.model,
            start_ns=started_ns,
            end_ns=started_ns + int(call.duration_ms * 1e6),
            usage=call.usage,
            cost_micro_usd=None if cost_nano is None else cost_nano // 1000,
            client=call.client,
            status_code=call.status,
            error_type=call.error,
            project_id=bundle.project_id,
            virtual_key_id=bundle.vk_id,
            model_provider_id=call.provider,
            labels=bundle.vk_tags,
            requested_model=ctx.requested_model,
            **self._content(ctx),
        )

    def _content(self, ctx: RequestContext) -> dict[str, Any]:
        """Prompt and answer for the span, when the bundle asked for content capture."""
        if ctx.transcript is None or ctx.body is None or ctx.endpoint is None:
            return {}
        secrets = [self.state.local_key, *(k for k in self.state.provider_keys.values() if k)]
        return {
            "capture_content": True,
            "input_messages": request_messages(ctx.endpoint.dialect, ctx.body),
            "output_messages": ctx.transcript.finish(),
            "secrets": secrets,
        }


def _log_call(call: CallRecord) -> None:
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
