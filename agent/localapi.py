"""Health probes and the local API, answered inside the gateway port.

One sorted route table (tailscale's localapi idea): path → (auth, methods,
handler). Handlers are plain async functions of the state returning status and
JSON, so tests call them without mitmproxy. Each route says who may call it:
`auth="key"` (the local key, checked by addons/auth.py; every `/_governor/v1/*`
route), `"none"` (probes), or `"cookie"` (the spend page, a browser page: its
handler also gets the request's query and cookies, checks the page session
itself and answers HTML or a redirect with an `Answer`). Stability: `/healthz`,
`/readyz`, `/startupz`, `/_governor/` and `/_governor/v1/*` are stable; anything
else is not served.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from agent import spendpage
from agent.core.budget import budget_line
from agent.pagesession import LINK_TTL_S, SESSION_TTL_S
from agent.state import GatewayState

API_PREFIX = "/_governor/v1/"
RECENT_REFUSALS_IN_STATUS = 5
PAGE_PATH = "/_governor/"
Reply = tuple[int, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class LocalRequest:
    """What a cookie route's handler reads of its request (no mitmproxy type in this module)."""

    query: Mapping[str, str] = field(default_factory=dict)
    cookies: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Answer:
    """A non-JSON answer (an HTML page, a redirect), sent as is."""

    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[GatewayState], Awaitable[Reply]]
PageHandler = Callable[[GatewayState, LocalRequest], Awaitable[Answer]]
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
        "refusals": list(reversed(state.refusals))[:RECENT_REFUSALS_IN_STATUS],
        "control_plane": state.control_plane.to_json() if state.control_plane else None,
        "key_state": state.revoked_code or "active",
        "managed": state.settings.managed_keys(),
        # Upstream modes per provider, the upstreams known, open circuits (docs/routing.md).
        "routing": state.routing.to_json(time.monotonic(), state.bundle.model_extra.get("upstream_modes"))
        if state.routing
        else None,
    }


async def sync(state: GatewayState) -> Reply:
    """"Sync now": revalidate the bundle and drain the outbox without waiting for the next tick."""
    connection = state.control_plane
    if connection is None:
        return 409, {"synced": False, "reason": "standalone: this agent has no control plane to sync with"}
    connection.sync.poke()
    connection.exporter.wake()
    return 202, {"synced": True}


async def page_link(state: GatewayState) -> Reply:
    """A one-time link to the spend page (single use, valid LINK_TTL_S): the key never goes in a URL."""
    token = state.page_sessions.new_link_token()
    return 200, {"url": f"http://{state.settings.listen}{PAGE_PATH}?t={token}", "expires_in_s": LINK_TTL_S}


# The page is read by a browser: never cached, never framed, never named in a Referer.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": spendpage.CSP,
}
CHART_DAYS = (7, 31)  # the chart spans the longest budget window so far, within these bounds


def session_cookie(state: GatewayState) -> str:
    # Cookies are per host, not per port: two agents on one machine must not overwrite each other's.
    return f"governor_session_{state.settings.listen.rpartition(':')[2]}"


def chart_days(state: GatewayState, now: float) -> int:
    starts = [budget_line(b, now).window_start for b in state.bundle.budgets]
    days = max((int((now - start) // 86400) + 1 for start in starts), default=14)
    return max(CHART_DAYS[0], min(CHART_DAYS[1], days))


async def page(state: GatewayState, request: LocalRequest) -> Answer:
    """The spend page: `?t=` trades a one-time token for the session cookie (303 to the bare page)."""
    name, sessions = session_cookie(state), state.page_sessions
    signed_in = sessions.valid(request.cookies.get(name))
    token = request.query.get("t")
    if token is not None:
        session = sessions.redeem(token)
        if session is None and not signed_in:
            return Answer(401, spendpage.render_signin("This link has expired or was already used.").encode(), headers=PAGE_HEADERS)
        headers = {**PAGE_HEADERS, "Location": PAGE_PATH}
        if session is not None:
            headers["Set-Cookie"] = f"{name}={session}; Path=/_governor; HttpOnly; SameSite=Strict; Max-Age={int(SESSION_TTL_S)}"
        return Answer(303, b"", headers=headers)
    if not signed_in:
        return Answer(401, spendpage.render_signin("This page opens from a one-time link.").encode(), headers=PAGE_HEADERS)
    now = time.time()
    _, payload = await status(state)
    days = await state.store.daily_totals(chart_days(state, now), now=now)
    body = spendpage.render(
        payload,
        [c.to_json() for c in reversed(state.recent_calls)],
        now=now,
        days=[(day, cost / NANO, n) for day, cost, n in days],
        refusals=list(reversed(state.refusals)),
    )
    return Answer(200, body.encode(), headers=PAGE_HEADERS)


@dataclass(frozen=True, slots=True)
class Route:
    handler: Handler | PageHandler
    auth: Literal["key", "cookie", "none"]
    methods: tuple[str, ...] = ("GET", "HEAD")

    @property
    def needs_key(self) -> bool:
        return self.auth == "key"

    async def call(self, state: GatewayState, request: LocalRequest) -> Reply | Answer:
        if self.auth == "cookie":
            return await self.handler(state, request)  # type: ignore[call-arg]
        return await self.handler(state)  # type: ignore[call-arg]


# Keep sorted (a test checks): one place lists everything the port answers itself.
ROUTES: dict[str, Route] = {
    "/": Route(root, auth="none"),
    "/_governor/": Route(page, auth="cookie"),
    "/_governor/v1/calls": Route(calls, auth="key"),
    "/_governor/v1/page-link": Route(page_link, auth="key", methods=("POST",)),
    "/_governor/v1/status": Route(status, auth="key"),
    "/_governor/v1/sync": Route(sync, auth="key", methods=("POST",)),
    "/healthz": Route(healthz, auth="none"),
    "/readyz": Route(readyz, auth="none"),
    "/startupz": Route(startupz, auth="none"),
}


def lookup(path: str) -> Route | None:
    return ROUTES.get(path)
