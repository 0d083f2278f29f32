"""What the pipeline knows about one call, carried in `flow.metadata` from addon to addon."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.core.dialects import Dialect, Endpoint
from agent.core.tracing import TraceIds
from agent.core.usage import Usage

METADATA_KEY = "governor"


@dataclass(slots=True)
class RequestContext:
    ids: TraceIds
    started_at: float = field(default_factory=time.time)
    started_mono: float = field(default_factory=time.perf_counter)
    endpoint: Endpoint | None = None
    client: str = "unknown"
    authenticated: bool = False
    # Filled by parse.
    body: dict[str, Any] | None = None
    model: str | None = None  # what goes upstream (aliases resolved)
    requested_model: str | None = None  # what the client asked for
    stream: bool = False
    # The gateway asked the upstream for a usage frame the client did not ask
    # for, and must hide it again.
    hide_usage_frames: bool = False
    # `body` was changed (usage injection, policy strip, alias) and must be re-serialised.
    body_dirty: bool = False
    # Set by policy when tool rules apply: the response side refuses denied calls too.
    tool_denier: Callable[[str], bool] | None = None
    # Set by budget once the ledger holds this call's reservation (an AdmissionPlan).
    admission: Any = None
    # Filled by route.
    forwarded: bool = False
    # Filled by meter.
    tap: Any = None
    transcript: Any = None  # a content-capture tap, when the bundle asks for content in traces
    first_byte_mono: float | None = None
    usage: Usage | None = None
    status: int | None = None
    error: str | None = None
    recorded: bool = False
    # Headers the pipeline adds to the client's response (budget warnings, strips…).
    response_headers: dict[str, str] = field(default_factory=dict)

    @property
    def dialect(self) -> Dialect | None:
        return self.endpoint.dialect if self.endpoint else None

    @property
    def ttfb_ms(self) -> float | None:
        if self.first_byte_mono is None:
            return None
        return (self.first_byte_mono - self.started_mono) * 1000
