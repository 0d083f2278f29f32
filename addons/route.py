"""Sends the call upstream the way the org chose (agent/core/routing.py): the
provider with a keychain key (direct), the org gateway with the personal VK
(gateway), or the provider with the client's own credential (passthrough;
always so for intercepted calls). The local key is never forwarded.

One upstream: mitmproxy dials it. A fallback chain: the flow goes to the
forwarder's loopback relay, which walks the chain (agent/forwarder.py).
"""

from __future__ import annotations

import asyncio
import json
import time

from mitmproxy import http

from addons.auth import key_matches, presented_key
from addons.intercept import intercepted
from addons.respond import pending_call, reply_error
from agent import login
from agent.core.dialects import Provider
from agent.core.errors import GatewayError
from agent.core.routing import AZURE_OPENAI, GATEWAY, Mode, Plan, Router, Scheme, Target
from agent.core.upstream import CLIENT_AUTH_HEADERS, HOP_HEADERS_NOT_FORWARDED
from agent.forwarder import TOKEN_HEADER, Forwarder, Job, relay_request_headers
from agent.request import RequestContext
from agent.state import GatewayState

VK_REFRESH_S = 30.0


class Route:
    def __init__(self, state: GatewayState, forwarder: Forwarder, credentials: dict[str, str | None]):
        self.state = state
        self.router: Router = state.routing
        self.forwarder = forwarder
        self.credentials = credentials  # target name -> secret (provider keys, azure_openai)
        self._vk_read_at = -VK_REFRESH_S

    async def request(self, flow: http.HTTPFlow) -> None:
        ctx = pending_call(flow)
        if ctx is None:
            return
        provider = ctx.endpoint.provider
        origin = intercepted(flow)
        mode = Mode.PASSTHROUGH if origin else self.router.mode(provider, self.state.bundle.model_extra.get("upstream_modes"))
        if origin:
            primary: Target | None = Target(origin.host, origin, frozenset({ctx.endpoint.dialect}), Scheme.CLIENT)
        else:
            primary = self.router.primary(provider, mode)
        fallback = self.state.bundle.fallback
        chain = [] if origin else fallback.chain
        if GATEWAY in self.router.targets and (mode is Mode.GATEWAY or chain):
            await self._refresh_vk()
        refusal = self._refusal(flow, provider, mode, primary)
        if refusal is not None:
            reply_error(flow, self.state.version, refusal)
            return
        assert primary is not None
        plan = self.router.plan(primary, ctx.endpoint.dialect, chain, fallback.max_attempts, time.monotonic())
        if not plan.attempts:
            reply_error(flow, self.state.version, GatewayError(
                "circuit_open", f"every upstream for this call is cooling down after repeated failures: {', '.join(plan.skipped)}"
            ))  # fmt: skip
            return
        request = flow.request
        if ctx.body_dirty and ctx.body is not None:
            request.content = json.dumps(ctx.body, ensure_ascii=False, separators=(",", ":")).encode()
        client_auth = [(k, v) for k, v in request.headers.items(multi=True) if k.lower() in CLIENT_AUTH_HEADERS]
        for header in HOP_HEADERS_NOT_FORWARDED:
            request.headers.pop(header, None)
        # The tap reads a copy of the response; compressed bytes would hide the usage.
        request.headers["accept-encoding"] = "identity"
        # Streams go through the relay even with one upstream: if that upstream dies
        # mid-stream, the relay ends the client's stream with the dialect's own
        # terminal error event (mitmproxy alone could only drop the connection).
        if plan.chained or (ctx.stream and origin is None):
            self._to_relay(flow, ctx, plan, client_auth)
        else:
            self._to_upstream(request, provider, primary, origin is not None)
        ctx.forwarded = True
        self.state.inflight += 1

    def _refusal(self, flow: http.HTTPFlow, provider: Provider, mode: Mode, primary: Target | None) -> GatewayError | None:
        if mode is Mode.PASSTHROUGH:
            presented = presented_key(flow.request)
            if presented is None or key_matches(presented, self.state.local_key):
                return GatewayError(
                    "invalid_api_key",
                    f"{provider.value} is in passthrough mode: present your own {provider.value} credential, not the local key",
                    status=401,
                )
            return None
        if primary is None or not self.credentials.get(primary.name):
            if mode is Mode.GATEWAY:
                hint = "set gateway_url and run `governor login`" if primary is None else "run `governor login`"
                return GatewayError("no_provider_configured", f"gateway mode needs the org gateway and a personal key: {hint}")
            return GatewayError(
                "no_provider_configured",
                f"no {provider.value} credential: set GOVERNOR_{provider.value.upper()}_API_KEY "
                f"or run `governor secret set {provider.value}_api_key`",
            )
        return None

    def _to_upstream(self, request: http.Request, provider: Provider, target: Target, is_intercepted: bool) -> None:
        if is_intercepted:
            return  # the client's own destination and credential, untouched
        if target.scheme is not Scheme.CLIENT:
            for header in CLIENT_AUTH_HEADERS:
                request.headers.pop(header, None)
            if "key" in request.query:
                request.query.pop("key")
            request.headers.update(target.auth_headers(provider, self.credentials[target.name] or ""))
        upstream = target.upstream
        request.scheme, request.host, request.port = upstream.scheme, upstream.host, upstream.port
        request.path = target.path(request.path)

    def _to_relay(
        self, flow: http.HTTPFlow, ctx: RequestContext, plan: Plan, client_auth: list[tuple[str, str]]
    ) -> None:
        request = flow.request
        assert ctx.endpoint is not None
        headers = [(k, v) for k, v in request.headers.items(multi=True) if k.lower() not in CLIENT_AUTH_HEADERS]
        path = request.path
        if "key" in request.query:  # Gemini's ?key= is a credential too
            query = [(k, v) for k, v in request.query.items(multi=True) if k != "key"]
            client_auth.append(("x-goog-api-key", request.query["key"]))
            path = request.path.split("?", 1)[0] + ("?" + "&".join(f"{k}={v}" for k, v in query) if query else "")
        job = Job(
            request_id=ctx.ids.request_id,
            method=request.method,
            path=path,
            headers=relay_request_headers(headers),
            client_auth=client_auth,
            body=request.raw_content or b"",
            provider=ctx.endpoint.provider,
            dialect=ctx.endpoint.dialect,
            attempts=plan.attempts,
            positions=plan.positions,
            credentials={k: v for k, v in self.credentials.items() if v},
            gemini_array=ctx.endpoint.path_stream and request.query.get("alt") != "sse",
        )
        token = self.forwarder.submit(job)
        flow.metadata[TOKEN_HEADER] = token
        request.headers[TOKEN_HEADER] = token
        request.scheme, request.host, request.port = "http", "127.0.0.1", self.forwarder.port

    def error(self, flow: http.HTTPFlow) -> None:
        token = flow.metadata.get(TOKEN_HEADER)
        if token:
            self.forwarder.discard(token)  # never reached the relay (client gone first)

    async def _refresh_vk(self) -> None:
        now = time.monotonic()
        if now - self._vk_read_at < VK_REFRESH_S:
            return
        self._vk_read_at = now
        # A keychain read can block (a macOS prompt): never on the proxy's loop.
        self.credentials[GATEWAY] = await asyncio.to_thread(login.personal_vk, self.state.settings.data_dir)


def initial_credentials(state: GatewayState, azure_key: str | None) -> dict[str, str | None]:
    creds: dict[str, str | None] = {p.value: key for p, key in state.provider_keys.items()}
    creds[AZURE_OPENAI] = azure_key
    return creds

