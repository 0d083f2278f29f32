"""Intercept mode: the second, HTTPS_PROXY-style listener (mitmproxy regular mode).

Only LLM provider hosts on the list are decrypted, with the per-machine CA
(agent/trustca.py); a TLS connection to any other host is tunnelled untouched
(`ignore_connection` at the ClientHello, so mitmproxy never terminates it) and
logged as host only. A decrypted call whose path is an LLM endpoint goes
through the whole pipeline with the client's own credential; other paths on
those hosts (OAuth, telemetry, …) are forwarded ungoverned. The listener also
answers `GET /proxy.pac` for itself.

Runs first in the pipeline: it marks flows in `flow.metadata` for guard,
auth and route, and answers nothing else.
"""

from __future__ import annotations

import logging

from mitmproxy import http, tls
from mitmproxy.proxy import mode_specs, server_hooks

from agent.core.dialects import Provider
from agent.core.routing import Mode, classify_intercepted, host_listed
from agent.core.upstream import Upstream
from agent.state import GatewayState

log = logging.getLogger("governor.intercept")

MARK = "governor.intercept"  # an Upstream (decrypted LLM call) or TUNNEL
ENDPOINT = "governor.intercept.endpoint"
TUNNEL = "tunnel"
PAC_PATH = "/proxy.pac"


def intercepted(flow: http.HTTPFlow) -> Upstream | None:
    """The provider a decrypted call was headed for (None: not an intercepted LLM call)."""
    mark = flow.metadata.get(MARK)
    return mark if isinstance(mark, Upstream) else None


def uses_client_credential(flow: http.HTTPFlow, state: GatewayState, provider: Provider) -> bool:
    """The client's own provider credential goes upstream, so no local key is asked for:
    every intercepted call, and base-URL calls to a provider in passthrough mode."""
    if intercepted(flow) is not None:
        return True
    if state.routing is None:
        return False
    return bool(state.routing.mode(provider, state.bundle.model_extra.get("upstream_modes")) is Mode.PASSTHROUGH)


def parse_resolve(mapping: dict[str, str]) -> dict[str, tuple[str, int | None]]:
    out: dict[str, tuple[str, int | None]] = {}
    for host, target in mapping.items():
        address, _, port = target.rpartition(":") if target.count(":") == 1 else (target, "", "")
        if not address:
            raise ValueError(f"resolve entry for {host!r} must be ip[:port], got {target!r}")
        out[host.lower()] = (address, int(port) if port else None)
    return out


def _on_proxy_listener(client: object) -> bool:
    return isinstance(getattr(client, "proxy_mode", None), mode_specs.RegularMode)


class Intercept:
    def __init__(self, state: GatewayState, hosts: list[str], pac: bytes, resolve: dict[str, str]):
        self.state = state
        self.hosts = hosts
        self.pac = pac
        self.resolve = parse_resolve(resolve)

    def listed(self, host: str) -> bool:
        """On the built-in or configured list, or on the bundle's `intercept_hosts`."""
        extra = self.state.bundle.model_extra.get("intercept_hosts") or []
        return host_listed(host, self.hosts) or (isinstance(extra, list) and host_listed(host, extra))

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        if not _on_proxy_listener(data.context.client):
            return
        address = data.context.server.address
        host = data.client_hello.sni or (address[0] if address else "")
        if not self.listed(host):
            data.ignore_connection = True
            log.info("tunnel host=%s", host)

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        address = data.server.address
        if address is None or not self.resolve:
            return
        mapped = self.resolve.get(address[0].lower())
        if mapped is not None:
            data.server.address = (mapped[0], mapped[1] or address[1])

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if not _on_proxy_listener(flow.client_conn):
            return
        request = flow.request
        listener = (self.state.settings.intercept_listen.rpartition(":")[0], self.state.settings.intercept_port)
        if (request.host, request.port) == listener or request.host == "localhost" and request.port == listener[1]:
            flow.metadata[MARK] = TUNNEL
            if request.path.split("?", 1)[0] == PAC_PATH:
                flow.response = http.Response.make(200, self.pac, {"Content-Type": "application/x-ns-proxy-autoconfig"})
            else:
                flow.response = http.Response.make(404, b"not found\n", {"Content-Type": "text/plain"})
            return
        if not self.listed(request.host):
            flow.metadata[MARK] = TUNNEL  # plain HTTP to an unlisted host: forwarded untouched
            return
        endpoint = classify_intercepted(
            request.host, request.method, request.path.split("?", 1)[0], request.headers, "key" in request.query
        )
        if endpoint is None:
            flow.metadata[MARK] = TUNNEL
            log.info("intercept_ungoverned host=%s method=%s path=%s", request.host, request.method, request.path.split("?", 1)[0])
            return
        flow.metadata[MARK] = Upstream(request.scheme, request.host, request.port, "")
        flow.metadata[ENDPOINT] = endpoint
