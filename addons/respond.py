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
