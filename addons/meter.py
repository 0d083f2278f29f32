"""Streams every provider response to the client as it arrives, byte for byte,
while a tap reads a copy for usage.

Per chunk: tap (sees what the provider sent, for billing) → tool-call guard
(cuts a denied tool call out of the stream) → usage-frame hider (undoes the
usage frame the gateway asked for on the client's behalf) → client.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from mitmproxy import http

from addons.respond import context, reply_error
from agent.core.chat_usage import UsageFrameHider
from agent.core.dialects import Operation
from agent.core.errors import GatewayError
from agent.core.taps import make_tap
from agent.core.toolguard import ToolCallGuard, denied_tool_calls, policy_message
from agent.core.transcript import make_transcript
from agent.request import RequestContext
from agent.state import GatewayState

log = logging.getLogger("governor.meter")
StreamFn = Callable[[bytes], "bytes | tuple[()]"]


class Meter:
    def __init__(self, state: GatewayState):
        self.state = state

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        ctx = context(flow)
        if ctx is None or not ctx.forwarded or flow.response is None:
            return
        response = flow.response
        ctx.status = response.status_code
        assert ctx.endpoint is not None
        if ctx.endpoint.operation is not Operation.GENERATE or response.status_code >= 400:
            response.stream = _passthrough(ctx)
            return
        streaming = "event-stream" in response.headers.get("content-type", "") or ctx.endpoint.path_stream
        ctx.tap = make_tap(ctx.endpoint.dialect, streaming)
        if self.state.control_plane is not None and self.state.bundle.capture_content:
            ctx.transcript = make_transcript(ctx.endpoint.dialect)
        if ctx.tool_denier is not None and not streaming:
            return  # buffered: `response` judges the whole body before the client sees it
        guard = ToolCallGuard(ctx.endpoint.dialect, ctx.tool_denier) if ctx.tool_denier else None
        hider = UsageFrameHider() if ctx.hide_usage_frames and streaming else None
        response.stream = _metered(ctx, guard, hider, lambda name: self._refused(ctx, name))

    def response(self, flow: http.HTTPFlow) -> None:
        """A buffered (non-streamed) answer under tool rules: refuse it whole if it calls a denied tool."""
        ctx = context(flow)
        if ctx is None or ctx.tap is None or ctx.tool_denier is None or flow.response is None or flow.response.stream:
            return
        assert ctx.endpoint is not None
        body = flow.response.content or b""
        ctx.first_byte_mono = ctx.first_byte_mono or time.perf_counter()
        ctx.tap.feed(body)
        if ctx.transcript is not None:
            ctx.transcript.feed(body)
        try:
            denied = denied_tool_calls(ctx.endpoint.dialect, json.loads(body), ctx.tool_denier)
        except ValueError:
            return  # not JSON: nothing that could call a tool
        if denied:
            self._refused(ctx, denied[0])
            reply_error(flow, self.state.version, GatewayError("policy_violation", policy_message(denied[0])))

    def _refused(self, ctx: RequestContext, tool: str) -> None:
        ctx.error = "policy_violation"
        log.warning("policy_cut_tool_call request_id=%s client=%s tool=%r", ctx.ids.request_id, ctx.client, tool)
        self.state.note_refusal("policy_violation", policy_message(tool), ctx.client, ctx.model)


def _passthrough(ctx: RequestContext) -> StreamFn:
    def on_chunk(data: bytes) -> bytes | tuple[()]:
        if data and ctx.first_byte_mono is None:
            ctx.first_byte_mono = time.perf_counter()
        return data or ()

    return on_chunk


def _metered(
    ctx: RequestContext, guard: ToolCallGuard | None, hider: UsageFrameHider | None, on_cut: Callable[[str], None]
) -> StreamFn:
    tap, transcript = ctx.tap, ctx.transcript

    def on_chunk(data: bytes) -> bytes | tuple[()]:
        # Never hand mitmproxy an empty chunk: on HTTP/1.1 it writes the
        # chunked-encoding terminator and ends the client's stream early.
        if not data:  # mitmproxy's end-of-stream call
            out = guard.finish() if guard else b""
            if hider:
                out = hider.feed(out) + hider.finish()
            return out or ()
        if ctx.first_byte_mono is None:
            ctx.first_byte_mono = time.perf_counter()
        tap.feed(data)
        if transcript is not None:
            transcript.feed(data)
        out = data
        if guard is not None:
            already_cut = guard.denied is not None
            out = guard.feed(out)
            if guard.denied is not None and not already_cut:
                on_cut(guard.denied)
        if hider is not None:
            out = hider.feed(out)
        return out or ()

    return on_chunk
