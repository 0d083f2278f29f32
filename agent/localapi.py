"""Health probes and the local API, answered inside the gateway port.

One sorted route table (tailscale's localapi idea): path → (auth required,
handler). Handlers are plain functions of the state returning status and JSON,
so tests call them without mitmproxy. Stability: `/healthz`, `/readyz`,
`/startupz` and `/_governor/v1/*` are stable; anything else is not served.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from agent.state import GatewayState

API_PREFIX = "/_governor/v1/"
Handler = Callable[[GatewayState], tuple[int, dict[str, Any]]]


def healthz(state: GatewayState) -> tuple[int, dict[str, Any]]:
    return 200, {"status": "ok", "version": state.version, "uptime_s": round(state.uptime_s, 6)}


def readyz(state: GatewayState) -> tuple[int, dict[str, Any]]:
    if state.draining:
        return 503, {"status": "draining"}
    if not state.started:
        return 503, {"status": "starting"}
    return 200, {"status": "ok"}


def startupz(state: GatewayState) -> tuple[int, dict[str, Any]]:
    if not state.started:
        return 503, {"status": "degraded", "checks": {"listener": "starting"}}
    return readyz(state)


def root(state: GatewayState) -> tuple[int, dict[str, Any]]:
    # Claude Code probes `HEAD /` before every run, without a key.
    return 200, {"status": "ok", "service": "governor", "version": state.version}


def calls(state: GatewayState) -> tuple[int, dict[str, Any]]:
    return 200, {"calls": [c.to_json() for c in reversed(state.recent_calls)]}


def status(state: GatewayState) -> tuple[int, dict[str, Any]]:
    return 200, {
        "version": state.version,
        "uptime_s": round(state.uptime_s, 3),
        "listen": state.settings.listen,
        "state": "draining" if state.draining else ("running" if state.started else "starting"),
        "inflight": state.inflight,
        "providers": {
            p.value: {
                "base_url": f"{u.scheme}://{u.host}:{u.port}{u.path_prefix}",
                "credential": "configured" if state.provider_keys.get(p) else "missing",
            }
            for p, u in state.upstreams.items()
        },
    }


@dataclass(frozen=True, slots=True)
class Route:
    handler: Handler
    needs_key: bool


# Keep sorted (a test checks): one place lists everything the port answers itself.
ROUTES: dict[str, Route] = {
    "/": Route(root, needs_key=False),
    "/_governor/v1/calls": Route(calls, needs_key=True),
    "/_governor/v1/status": Route(status, needs_key=True),
    "/healthz": Route(healthz, needs_key=False),
    "/readyz": Route(readyz, needs_key=False),
    "/startupz": Route(startupz, needs_key=False),
}


def lookup(path: str) -> Route | None:
    return ROUTES.get(path)
