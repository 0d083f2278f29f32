"""The running gateway's shared, in-process state: what addons and the local API read.

Durable facts (ledger, outbox, bundle) live in the store; this holds what is
cheap to lose on restart: lifecycle flags and the recent calls ring.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from agent.config import Settings
from agent.core.bundle import Bundle
from agent.core.dialects import Provider
from agent.core.upstream import Upstream
from agent.core.usage import Usage
from agent.pagesession import PageSessions
from agent.store import Store

RECENT_CALLS = 200
RECENT_REFUSALS = 100


@dataclass(slots=True)
class CallRecord:
    request_id: str
    started_at: float
    dialect: str
    provider: str
    model: str | None
    client: str
    stream: bool
    status: int | None
    usage: Usage
    ttfb_ms: float | None
    duration_ms: float
    error: str | None = None
    cost_nano_usd: int | None = None  # set when the call settles (None: not priced yet, or nothing billed)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["usage"] = asdict(self.usage)
        data["cost_usd"] = None if self.cost_nano_usd is None else self.cost_nano_usd / 1e9
        return data


@dataclass
class GatewayState:
    settings: Settings
    version: str
    local_key: str
    upstreams: dict[Provider, Upstream]
    provider_keys: dict[Provider, str | None]
    store: Store
    boot_mono: float = field(default_factory=time.monotonic)
    started: bool = False
    draining: bool = False
    inflight: int = 0
    recent_calls: deque[CallRecord] = field(default_factory=lambda: deque(maxlen=RECENT_CALLS))
    # Governance in force: the embedded default (nothing denied, no budget)
    # until a bundle file or the control plane supplies one.
    bundle: Bundle = field(default_factory=Bundle)
    bundle_source: str = "default"
    bundle_loaded_at: float | None = None
    last_refusal: dict[str, Any] | None = None
    refusals: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT_REFUSALS))
    page_sessions: PageSessions = field(default_factory=PageSessions)  # the spend page's links and cookies
    # When the control plane last confirmed the bundle (None: a file, never stale).
    bundle_validated_at: float | None = None
    # The org key's refusal learnt from the control plane (virtual_key_revoked, …).
    revoked_code: str | None = None
    control_plane: Any = None  # the OrgConnection when connected
    routing: Any = None  # the Router (agent/core/routing.py): modes, upstreams, circuit breaker

    def set_bundle(self, bundle: Bundle, source: str, loaded_at: float | None = None) -> None:
        self.bundle = bundle
        self.bundle_source = source
        self.bundle_loaded_at = time.time() if loaded_at is None else loaded_at

    def note_refusal(self, code: str, message: str, client: str, model: str | None) -> None:
        self.last_refusal = {"at": time.time(), "code": code, "message": message, "client": client, "model": model}
        self.refusals.append(self.last_refusal)

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self.boot_mono
