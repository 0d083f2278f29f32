"""First in the pipeline: identify the call, refuse what must never be served,
and answer health probes and the local API on the spot."""

from __future__ import annotations

import logging

from mitmproxy import http

from addons.intercept import ENDPOINT as INTERCEPT_ENDPOINT
from addons.intercept import MARK as INTERCEPT_MARK
from addons.intercept import TUNNEL as INTERCEPT_TUNNEL
from addons.respond import context, reply, reply_error, reply_json
from agent import localapi
from agent.core.access import host_allowed, is_loopback_peer, origin_allowed
from agent.core.clients import client_name
from agent.core.dialects import classify
from agent.core.errors import GatewayError
from agent.core.tracing import start_trace
from agent.request import METADATA_KEY, RequestContext
from agent.state import GatewayState

log = logging.getLogger("governor.guard")


class Guard:
    def __init__(self, state: GatewayState):
        self.state = state

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        request = flow.request
        proxied = flow.metadata.get(INTERCEPT_MARK)  # set by addons/intercept.py on the HTTPS_PROXY listener
        if proxied == INTERCEPT_TUNNEL:
            return  # not an LLM call: forwarded untouched, never governed
        ctx = RequestContext(ids=start_trace(request.headers.get("traceparent")))
        flow.metadata[METADATA_KEY] = ctx
        ctx.client = client_name(request.headers.get("user-agent"))
        path = request.path.split("?", 1)[0]
        ctx.endpoint = flow.metadata.get(INTERCEPT_ENDPOINT) or classify(
            request.method, path, request.headers, query_key="key" in request.query
        )
        version = self.state.version

        peer = flow.client_conn.peername[0] if flow.client_conn.peername else ""
        if not is_loopback_peer(peer):
            reply_error(flow, version, GatewayError("forbidden_host", "only this machine may use the gateway"))
        elif proxied is None and not host_allowed(request.host_header):
            log.warning("refused_host host=%r request_id=%s", request.host_header, ctx.ids.request_id)
            reply_error(
                flow,
                version,
                GatewayError("forbidden_host", "Host must be 127.0.0.1 or localhost (DNS rebinding protection)"),
            )
        elif not origin_allowed(request.headers.get("origin"), self.state.settings.allowed_origins):
            log.warning("refused_origin origin=%r request_id=%s", request.headers.get("origin"), ctx.ids.request_id)
            reply_error(
                flow,
                version,
                GatewayError(
                    "forbidden_origin",
                    "browser requests are refused: a web page may not use this gateway "
                    "(allow an origin with GOVERNOR_ALLOWED_ORIGINS)",
                ),
            )
        elif request.method == "OPTIONS":
            # CORS preflight from a page: never grant it.
            reply_error(flow, version, GatewayError("forbidden_origin", "CORS is not offered by this gateway"))

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        ctx = context(flow)
        if ctx is None:
            return
        route = localapi.lookup(flow.request.path.split("?", 1)[0])
        if route is not None and flow.request.method in route.methods:
            if route.needs_key and flow.request.headers.get("referer"):
                reply_error(flow, self.state.version, GatewayError("forbidden_origin", "the local API refuses browser requests"))
                return
            asked = localapi.LocalRequest(dict(flow.request.query.items()), dict(flow.request.cookies.items()))
            answer = await route.call(self.state, asked)
            if isinstance(answer, localapi.Answer):  # a page or a redirect (the spend page)
                body = b"" if flow.request.method == "HEAD" else answer.body
                reply(flow, self.state.version, answer.status, body, {"Content-Type": answer.content_type, **answer.headers})
                return
            status, payload = answer
            if flow.request.method == "HEAD":
                reply(flow, self.state.version, status, b"", {"Content-Type": "application/json"})
            else:
                reply_json(flow, self.state.version, status, payload)
        elif ctx.endpoint is None:
            reply_error(
                flow,
                self.state.version,
                GatewayError("not_found", f"{flow.request.method} {flow.request.path.split('?', 1)[0]} is not served by this gateway"),
            )

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        ctx = context(flow)
        if ctx is None or flow.response is None:
            return
        flow.response.headers.update(ctx.ids.headers(self.state.version))
        flow.response.headers.update(ctx.response_headers)
