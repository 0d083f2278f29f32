"""Answers the gateway writes itself, stamped like every other response."""

from __future__ import annotations

import json
from typing import Any

from mitmproxy import http

from agent.core.errors import GatewayError, render
from agent.request import METADATA_KEY, RequestContext


def context(flow: http.HTTPFlow) -> RequestContext | None:
    ctx = flow.metadata.get(METADATA_KEY)
    return ctx if isinstance(ctx, RequestContext) else None


def pending_call(flow: http.HTTPFlow) -> RequestContext | None:
    """The context of an authenticated provider call nothing has answered yet; else None.

    Every step after auth starts here: an earlier verdict (a refusal, a local
    answer) is final and later steps leave the flow alone.
    """
    ctx = context(flow)
    if flow.response is not None or ctx is None or ctx.endpoint is None or not ctx.authenticated:
        return None
    return ctx


def reply(flow: http.HTTPFlow, version: str, status: int, body: bytes, headers: dict[str, str]) -> None:
    ctx = context(flow)
    stamped = dict(headers)
    if ctx is not None:
        stamped.update(ctx.ids.headers(version))
        stamped.update(ctx.response_headers)
        ctx.status = status
    flow.response = http.Response.make(status, body, stamped)


def reply_json(flow: http.HTTPFlow, version: str, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload, separators=(",", ":")).encode()
    reply(flow, version, status, body, {"Content-Type": "application/json", "Cache-Control": "no-store"})


def reply_error(flow: http.HTTPFlow, version: str, error: GatewayError) -> None:
    ctx = context(flow)
    status, body, headers = render(error, ctx.dialect if ctx else None)
    if ctx is not None:
        ctx.error = error.code
    reply(flow, version, status, body, headers)
