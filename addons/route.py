"""Sends the call to its provider with the provider's credential, never the local key."""

from __future__ import annotations

import json

from mitmproxy import http

from addons.respond import context, reply_error
from agent.core.errors import GatewayError
from agent.core.upstream import CLIENT_AUTH_HEADERS, HOP_HEADERS_NOT_FORWARDED, credential_headers
from agent.state import GatewayState


class Route:
    def __init__(self, state: GatewayState):
        self.state = state

    def request(self, flow: http.HTTPFlow) -> None:
        ctx = context(flow)
        if flow.response is not None or ctx is None or ctx.endpoint is None or not ctx.authenticated:
            return
        provider = ctx.endpoint.provider
        api_key = self.state.provider_keys.get(provider)
        if not api_key:
            reply_error(
                flow,
                self.state.version,
                GatewayError(
                    "no_provider_configured",
                    f"no {provider.value} credential: set GOVERNOR_{provider.value.upper()}_API_KEY "
                    f"or run `governor secret set {provider.value}_api_key`",
                ),
            )
            return
        request = flow.request
        if ctx.body_dirty and ctx.body is not None:
            request.content = json.dumps(ctx.body, ensure_ascii=False, separators=(",", ":")).encode()
        for header in CLIENT_AUTH_HEADERS + HOP_HEADERS_NOT_FORWARDED:
            request.headers.pop(header, None)
        if "key" in request.query:
            request.query.pop("key")
        request.headers.update(credential_headers(provider, api_key))
        # The tap reads a copy of the response; compressed bytes would hide the usage.
        request.headers["accept-encoding"] = "identity"
        upstream = self.state.upstreams[provider]
        request.scheme, request.host, request.port = upstream.scheme, upstream.host, upstream.port
        request.path = upstream.path_for(request.path)
        ctx.forwarded = True
        self.state.inflight += 1
