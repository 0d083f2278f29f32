"""Fourth: the org's policy on tools, MCP servers, URLs and models, before
anything leaves the laptop. The rules themselves are `agent.core.policy`."""

from __future__ import annotations

import logging

from mitmproxy import http

from addons.respond import pending_call, reply_error
from agent.core.dialects import Operation
from agent.core.errors import GatewayError
from agent.core.policy import evaluate_request, tool_denier
from agent.state import GatewayState

log = logging.getLogger("governor.policy")
STRIPPED_HEADER = "X-Langwatch-Policy-Stripped"


class Policy:
    def __init__(self, state: GatewayState):
        self.state = state

    def request(self, flow: http.HTTPFlow) -> None:
        ctx = pending_call(flow)
        if ctx is None or ctx.body is None or ctx.endpoint is None:
            return
        bundle = self.state.bundle
        dialect = ctx.endpoint.dialect
        decision = evaluate_request(bundle, dialect, ctx.body, model=ctx.endpoint.path_model)
        if not decision.allowed:
            log.warning(
                "policy_refused request_id=%s client=%s dimension=%s subject=%r",
                ctx.ids.request_id, ctx.client, decision.dimension, decision.subject,
            )
            message = decision.message or "refused by policy"
            self.state.note_refusal(decision.code or "policy_violation", message, ctx.client, ctx.model)
            reply_error(flow, self.state.version, GatewayError(decision.code or "policy_violation", message, status=decision.status))
            return
        if decision.body is not None:
            ctx.body = decision.body
            ctx.body_dirty = True
        if decision.stripped:
            ctx.response_headers[STRIPPED_HEADER] = ",".join(decision.stripped)
        if decision.model and decision.model_changed:
            ctx.model = decision.model
            if decision.model_in_path:
                flow.request.path = flow.request.path.replace(
                    f"/models/{decision.requested_model}:", f"/models/{decision.model}:", 1
                )
        rules = bundle.policy_rules
        if ctx.endpoint.operation is Operation.GENERATE and not (rules.tools.is_empty and rules.mcp.is_empty):
            # The model may call a tool the client never offered: the meter cuts it.
            ctx.tool_denier = tool_denier(bundle, dialect)
