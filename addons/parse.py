"""Third: read the call's JSON body into the context (model, stream, tools…).

Bad input stops here with a 4xx in the client's dialect and is never forwarded.
"""

from __future__ import annotations

import json

from mitmproxy import http

from addons.respond import pending_call, reply_error
from agent.core.chat_usage import inject_stream_usage
from agent.core.dialects import Dialect, Operation
from agent.core.errors import GatewayError
from agent.state import GatewayState


class Parse:
    def __init__(self, state: GatewayState):
        self.state = state

    def request(self, flow: http.HTTPFlow) -> None:
        ctx = pending_call(flow)
        if ctx is None:
            return
        endpoint = ctx.endpoint
        if endpoint.operation is Operation.LIST_MODELS:
            return
        content_type = flow.request.headers.get("content-type", "application/json").lower()
        if "json" not in content_type:
            reply_error(
                flow,
                self.state.version,
                GatewayError("unsupported_media_type", f"expected Content-Type: application/json, got {content_type!r}"),
            )
            return
        try:
            body = json.loads(flow.request.content or b"")
        except (ValueError, UnicodeDecodeError) as exc:
            reply_error(flow, self.state.version, GatewayError("bad_request", f"request body is not valid JSON: {exc}"))
            return
        if not isinstance(body, dict):
            reply_error(flow, self.state.version, GatewayError("bad_request", "request body must be a JSON object"))
            return
        model = endpoint.path_model if endpoint.dialect is Dialect.GEMINI else body.get("model")
        if not isinstance(model, str) or not model:
            reply_error(flow, self.state.version, GatewayError("missing_model", "the request names no model"))
            return
        ctx.body = body
        ctx.model = ctx.requested_model = model
        ctx.stream = endpoint.path_stream if endpoint.dialect is Dialect.GEMINI else body.get("stream") is True
        if endpoint.dialect is Dialect.OPENAI_CHAT and ctx.stream and endpoint.operation is Operation.GENERATE:
            # Meter the stream even when the client did not ask for usage; the
            # meter hides the extra frame again.
            if inject_stream_usage(body):
                ctx.hide_usage_frames = True
                ctx.body_dirty = True
