"""Fifth: reserve the call's worst-case cost on every budget it debits, in one
ledger transaction, before it is forwarded. A `block` budget that cannot
cover it refuses the call (402); rate limits refuse with 429."""

from __future__ import annotations

import logging
import time

from mitmproxy import http

from addons.respond import pending_call, reply_error
from agent.core.admission import client_metadata, plan_admission
from agent.core.budget import WARNING_HEADER
from agent.core.dialects import Operation
from agent.state import GatewayState

log = logging.getLogger("governor.budget")


class Budget:
    def __init__(self, state: GatewayState):
        self.state = state

    async def request(self, flow: http.HTTPFlow) -> None:
        ctx = pending_call(flow)
        if ctx is None or ctx.body is None or ctx.endpoint is None or ctx.model is None:
            return
        if ctx.endpoint.operation is not Operation.GENERATE:
            return
        headers = flow.request.headers
        plan = plan_admission(
            self.state.bundle,
            ctx.endpoint,
            ctx.body,
            ctx.model,
            len(flow.request.content or b""),
            time.time(),
            trace_id=ctx.ids.trace_id,
            end_user_id=headers.get("x-langwatch-end-user-id") or headers.get("x-litellm-end-user-id"),
            metadata=client_metadata(headers.get("x-langwatch-metadata")),
        )
        result = await self.state.store.admit(
            ctx.ids.request_id, plan.lines, plan.worst_case_nano, attribution=plan.attribution, rate_limits=plan.rate_limits
        )
        if not result.admitted:
            assert result.refusal is not None
            log.warning("budget_refused request_id=%s client=%s code=%s", ctx.ids.request_id, ctx.client, result.refusal.code)
            self.state.note_refusal(result.refusal.code, result.refusal.message, ctx.client, ctx.model)
            reply_error(flow, self.state.version, result.refusal)
            return
        ctx.admission = plan
        if result.warning:
            ctx.response_headers[WARNING_HEADER] = result.warning
