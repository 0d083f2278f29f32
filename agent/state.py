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
from agent.core.dialects import Provider
from agent.core.upstream import Upstream
from agent.core.usage import Usage

RECENT_CALLS = 200


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

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["usage"] = asdict(self.usage)
        return data


@dataclass
class GatewayState:
    settings: Settings
    version: str
    local_key: str
    upstreams: dict[Provider, Upstream]
    provider_keys: dict[Provider, str | None]
    boot_mono: float = field(default_factory=time.monotonic)
    started: bool = False
    draining: bool = False
    inflight: int = 0
    recent_calls: deque[CallRecord] = field(default_factory=lambda: deque(maxlen=RECENT_CALLS))

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self.boot_mono
