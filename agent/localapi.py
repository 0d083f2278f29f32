"""Health probes and the local API, answered inside the gateway port.

One sorted route table (tailscale's localapi idea): path → (auth required,
handler). Handlers are plain async functions of the state returning status and
JSON, so tests call them without mitmproxy. Stability: `/healthz`, `/readyz`,
`/startupz` and `/_governor/v1/*` are stable; anything else is not served.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from agent.core.budget import budget_line
from agent.state import GatewayState

API_PREFIX = "/_governor/v1/"
Reply = tuple[int, dict[str, Any]]
Handler = Callable[[GatewayState], Awaitable[Reply]]
MICRO = 1_000_000
NANO = 1_000_000_000


async def healthz(state: GatewayState) -> Reply:
    return 200, {"status": "ok", "version": state.version, "uptime_s": round(state.uptime_s, 6)}


async def readyz(state: GatewayState) -> Reply:
    if state.draining:
        return 503, {"status": "draining"}
    if not state.started:
        return 503, {"status": "starting"}
    return 200, {"status": "ok"}


async def startupz(state: GatewayState) -> Reply:
    if not state.started:
        return 503, {"status": "degraded", "checks": {"listener": "starting"}}
    return await readyz(state)


async def root(state: GatewayState) -> Reply:
    # Claude Code probes `HEAD /` before every run, without a key.
    return 200, {"status": "ok", "service": "governor", "version": state.version}


async def calls(state: GatewayState) -> Reply:
    return 200, {"calls": [c.to_json() for c in reversed(state.recent_calls)]}


async def budgets(state: GatewayState) -> list[dict[str, Any]]:
    now = time.time()
    lines = [budget_line(b, now) for b in state.bundle.budgets]
    return [
        {
            "id": s.budget_id,
            "scope": s.scope,
            "window": s.window,
            "on_breach": s.on_breach,
            "provider": s.provider,
            "limit_usd": s.limit_micro_usd / MICRO,
            "spent_usd": s.spent_micro_usd / MICRO,
            "reserved_usd": s.reserved_micro_usd / MICRO,
            "remaining_usd": s.remaining_micro_usd / MICRO,
            "pct": s.pct,
            "resets_at": s.window_end,
        }
        for s in await state.store.budget_view(lines)
    ]


async def today(state: GatewayState) -> dict[str, Any]:
    spend = await state.store.daily_spend()

    def row(r: Any) -> dict[str, Any]:
        data = asdict(r)
        data["cost_usd"] = data.pop("cost_nano_usd") / NANO
        data["tokens"] = r.input_tokens + r.output_tokens + r.cache_read_tokens + r.cache_write_tokens
        return data

    total = row(spend.total)
    return {
        "day": spend.day,
        "requests": total["requests"],
        "cost_usd": total["cost_usd"],
        "tokens": total["tokens"],
        "by_model": {r.key: row(r) for r in spend.by_model},
        "by_client": {r.key: row(r) for r in spend.by_client},
    }


async def status(state: GatewayState) -> Reply:
    bundle = state.bundle
    age = None if state.bundle_loaded_at is None else round(time.time() - state.bundle_loaded_at, 1)
    return 200, {
        "version": state.version,
        "uptime_s": round(state.uptime_s, 3),
        "listen": state.settings.listen,
        "state": "draining" if state.draining else ("running" if state.started else "starting"),
        "inflight": state.inflight,
        "governed": state.bundle_source != "default",
        "providers": {
            p.value: {
                "base_url": f"{u.scheme}://{u.host}:{u.port}{u.path_prefix}",
                "credential": "configured" if state.provider_keys.get(p) else "missing",
            }
            for p, u in state.upstreams.items()
        },
        "bundle": {
            "source": state.bundle_source,
            "revision": bundle.revision,
            "age_s": age,
            "stale": bool(bundle.max_stale_s is not None and age is not None and age > bundle.max_stale_s),
        },
        "budgets": await budgets(state),
        "today": await today(state),
        "last_refusal": state.last_refusal,
        "control_plane": state.control_plane.to_json() if state.control_plane else None,
        "key_state": state.revoked_code or "active",
        "managed": state.settings.managed_keys(),
    }


async def sync(state: GatewayState) -> Reply:
    """"Sync now": revalidate the bundle and drain the outbox without waiting for the next tick."""
    connection = state.control_plane
    if connection is None:
        return 409, {"synced": False, "reason": "standalone: this agent has no control plane to sync with"}
    connection.sync.poke()
    connection.exporter.wake()
    return 202, {"synced": True}


@dataclass(frozen=True, slots=True)
class Route:
    handler: Handler
    needs_key: bool
    methods: tuple[str, ...] = ("GET", "HEAD")


# Keep sorted (a test checks): one place lists everything the port answers itself.
ROUTES: dict[str, Route] = {
    "/": Route(root, needs_key=False),
    "/_governor/v1/calls": Route(calls, needs_key=True),
    "/_governor/v1/status": Route(status, needs_key=True),
    "/_governor/v1/sync": Route(sync, needs_key=True, methods=("POST",)),
    "/healthz": Route(healthz, needs_key=False),
    "/readyz": Route(readyz, needs_key=False),
    "/startupz": Route(startupz, needs_key=False),
}


def lookup(path: str) -> Route | None:
    return ROUTES.get(path)
