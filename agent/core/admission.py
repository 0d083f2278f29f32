"""What one call puts at stake before it is forwarded: the budgets it debits,
its worst-case cost, and the attribution its spend commands carry.

Pure: the budget addon turns a plan into one ledger transaction.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.core import budget as budget_rules
from agent.core.bundle import Bundle
from agent.core.dialects import Dialect, Endpoint
from agent.core.prices import PriceQuote, estimate_input_tokens, price_for, worst_case_nano_usd

# Where each dialect lets the client cap the answer's length.
_MAX_OUTPUT_KEYS: dict[Dialect, tuple[str, ...]] = {
    Dialect.ANTHROPIC: ("max_tokens",),
    Dialect.OPENAI_CHAT: ("max_completion_tokens", "max_tokens"),
    Dialect.OPENAI_RESPONSES: ("max_output_tokens",),
}

REQUEST_TYPES = {
    Dialect.ANTHROPIC: "messages",
    Dialect.OPENAI_CHAT: "chat",
    Dialect.OPENAI_RESPONSES: "responses",
    Dialect.GEMINI: "generate_content",
}


@dataclass(frozen=True, slots=True)
class AdmissionPlan:
    lines: list[budget_rules.BudgetLine]
    worst_case_nano: int
    quote: PriceQuote
    rate_limits: dict[str, int]
    attribution: dict[str, Any] = field(default_factory=dict)


def requested_max_output(dialect: Dialect, body: dict[str, Any]) -> int | None:
    if dialect is Dialect.GEMINI:
        config = body.get("generationConfig") or body.get("generation_config") or {}
        value = config.get("maxOutputTokens", config.get("max_output_tokens")) if isinstance(config, dict) else None
    else:
        value = next((body[k] for k in _MAX_OUTPUT_KEYS[dialect] if isinstance(body.get(k), int)), None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def client_metadata(header: str | None) -> dict[str, Any]:
    """`X-LangWatch-Metadata`: a JSON object the client attaches to its spend; anything else is ignored."""
    if not header:
        return {}
    try:
        value = json.loads(header)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# Provider types of the bundle's `providers[]` that serve each of our upstream dialects.
_PROVIDER_TYPES = {"anthropic": {"anthropic", "bedrock"}, "openai": {"openai", "azure"}, "gemini": {"gemini", "vertex"}}


def provider_ids(bundle: Bundle, provider: str) -> set[str]:
    """Every name a provider-filtered budget may use for `provider`: its type, the
    control plane's model-provider ids of that type (`providers[]` in the bundle),
    and the `mp_<type>` spelling the fallback chain also accepts."""
    ids = {provider, f"mp_{provider}"}
    types = _PROVIDER_TYPES.get(provider, {provider})
    for entry in bundle.model_extra.get("providers") or []:
        if isinstance(entry, dict) and entry.get("type") in types and entry.get("id"):
            ids.add(str(entry["id"]))
    return ids


def identity(bundle: Bundle) -> budget_rules.Identity:
    return budget_rules.Identity(
        vk_id=bundle.vk_id,
        project_id=bundle.project_id,
        principal_id=bundle.principal_id,
        team_id=bundle.team_id,
        organization_id=bundle.organization_id,
    )


def plan_admission(
    bundle: Bundle,
    endpoint: Endpoint,
    body: dict[str, Any],
    model: str,
    body_bytes: int,
    now: float,
    *,
    trace_id: str | None = None,
    end_user_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> AdmissionPlan:
    provider = endpoint.provider.value
    quote = price_for(model, provider, bundle.prices)
    worst = worst_case_nano_usd(estimate_input_tokens(body_bytes), requested_max_output(endpoint.dialect, body), quote)
    lines = budget_rules.applicable_budgets(bundle.budgets, identity(bundle), provider_ids(bundle, provider), now)
    attribution = spend_attribution(
        bundle, model=model, request_type=REQUEST_TYPES[endpoint.dialect], trace_id=trace_id,
        model_provider_id=provider, end_user_id=end_user_id, metadata=metadata,
    )
    return AdmissionPlan(lines, worst, quote, budget_rules.limits_of(bundle.rate_limits), attribution)


def spend_attribution(
    bundle: Any,
    *,
    model: str | None,
    request_type: str,
    trace_id: str | None = None,
    model_provider_id: str | None = None,
    end_user_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The attribution fields every spend command of a call carries (pass to `Store.admit`).

    From the bundle: organization, project, key, principal and the key's tags
    as `labels`. `metadata` (the client's `X-LangWatch-Metadata`) is sent as a
    JSON string of at most 4 KB, else `{}`.
    """
    meta = json.dumps(dict(metadata or {}), separators=(",", ":"))
    if len(meta.encode()) > 4096:
        meta = "{}"
    return {
        "organization_id": getattr(bundle, "organization_id", None),
        "project_id": getattr(bundle, "project_id", None),
        "virtual_key_id": getattr(bundle, "vk_id", None),
        "principal_id": getattr(bundle, "principal_id", None),
        "end_user_id": end_user_id,
        "trace_id": trace_id,
        "model": model,
        "model_provider_id": model_provider_id,
        "labels": list(getattr(bundle, "vk_tags", None) or []),
        "metadata": meta,
        "request_type": request_type,
        "outcome_carries_attribution": True,
    }

