"""Streams every provider response to the client as it arrives, byte for byte,
while a tap reads a copy for usage."""

from __future__ import annotations

import time

from mitmproxy import http

from addons.respond import context
from agent.core.dialects import Operation
from agent.core.chat_usage import UsageFrameHider
from agent.core.taps import make_tap
from agent.request import RequestContext
from agent.state import GatewayState


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
            response.stream = _first_byte_marker(ctx)
            return
        streaming = "event-stream" in response.headers.get("content-type", "") or ctx.endpoint.path_stream
        ctx.tap = make_tap(ctx.endpoint.dialect, streaming)
        hider = UsageFrameHider() if ctx.hide_usage_frames and streaming else None
        response.stream = _metered_stream(ctx, hider)


def _first_byte_marker(ctx: RequestContext):  # type: ignore[no-untyped-def]
    def on_chunk(data: bytes) -> bytes:
        if data and ctx.first_byte_mono is None:
            ctx.first_byte_mono = time.perf_counter()
        return data

    return on_chunk


def _metered_stream(ctx: RequestContext, hider: UsageFrameHider | None):  # type: ignore[no-untyped-def]
    tap = ctx.tap

    def on_chunk(data: bytes) -> bytes | tuple[()]:
        if not data:  # mitmproxy's end-of-stream call
            return (hider.finish() if hider else b"") or ()
        if ctx.first_byte_mono is None:
            ctx.first_byte_mono = time.perf_counter()
        tap.feed(data)
        if hider is None:
            return data
        # Never hand mitmproxy an empty chunk: on HTTP/1.1 it would write the
        # chunked-encoding terminator and end the client's stream early.
        return hider.feed(data) or ()

    return on_chunk
