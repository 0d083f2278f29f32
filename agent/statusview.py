"""How the agent's status JSON reads to a person: shared by `governor status`,
the tray menu and the spend page, so all three say the same thing.

Pure functions of the `/_governor/v1/status` payload. Every field beyond
`{version, uptime_s, listen, state, inflight, providers}` is optional: an
older agent, or one without governance, simply shows less.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

WARN_PCT = 80.0
BLOCKED_STATES = frozenset({"blocked", "revoked", "vk_revoked"})


class Health(StrEnum):
    """The one-word state the tray colours and `status` exits with."""

    GOVERNED = "governed"
    WARNING = "warning"
    BLOCKED = "blocked"
    NOT_RUNNING = "not running"


def budgets(status: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    return [b for b in ((status or {}).get("budgets") or []) if isinstance(b, dict)]


def budget_pct(budget: Mapping[str, Any]) -> float:
    if budget.get("pct") is not None:
        return float(budget["pct"])
    limit = float(budget.get("limit_usd") or 0)
    spent = float(budget.get("spent_usd") or 0)
    return 100.0 * spent / limit if limit > 0 else 0.0


def budget_exhausted(budget: Mapping[str, Any]) -> bool:
    remaining = budget.get("remaining_usd")
    if remaining is not None:
        return float(remaining) <= 0
    return budget_pct(budget) >= 100


def bundle_stale(status: Mapping[str, Any] | None) -> bool:
    bundle = (status or {}).get("bundle") or {}
    return bool(bundle.get("stale"))


def health(status: Mapping[str, Any] | None) -> Health:
    if status is None:
        return Health.NOT_RUNNING
    blocking = [b for b in budgets(status) if b.get("on_breach", "block") == "block" and budget_exhausted(b)]
    key_refused = status.get("key_state") not in (None, "active")  # revoked, disabled or expired org key
    if blocking or key_refused or str(status.get("state", "")) in BLOCKED_STATES:
        return Health.BLOCKED
    if (
        any(budget_pct(b) >= WARN_PCT for b in budgets(status))
        or bundle_stale(status)
        or status.get("governed") is False
        or status.get("state") not in (None, "running")
    ):
        return Health.WARNING
    return Health.GOVERNED


def ring_fraction(status: Mapping[str, Any] | None) -> float:
    """How full the tray ring is: the most-used monthly budget (any window if no monthly)."""
    lines = budgets(status)
    monthly = [b for b in lines if b.get("window") == "month"] or lines
    if not monthly:
        return 0.0
    return max(0.0, min(1.0, max(budget_pct(b) for b in monthly) / 100.0))


def money(usd: float | int | None) -> str:
    if usd is None:
        return "–"
    usd = float(usd)
    if 0 < abs(usd) < 0.01:
        return f"${usd:.4f}"
    return f"${usd:,.2f}"


def short_date(unix: float | int | None, now: float | None = None) -> str:
    if not unix:
        return "–"
    when = dt.datetime.fromtimestamp(float(unix))
    current = dt.datetime.fromtimestamp(now) if now is not None else dt.datetime.now()
    if when.date() == current.date():
        return when.strftime("%H:%M")
    text = f"{when.day} {when.strftime('%b')}"
    return text if when.year == current.year else f"{text} {when.year}"


def budget_line(budget: Mapping[str, Any], now: float | None = None) -> str:
    """"$42.10 of $200.00 · month · resets 1 Jan"."""
    parts = [f"{money(budget.get('spent_usd'))} of {money(budget.get('limit_usd'))}"]
    if budget.get("window"):
        parts.append(str(budget["window"]))
    if budget.get("resets_at"):
        parts.append(f"resets {short_date(budget['resets_at'], now)}")
    return " · ".join(parts)


def budget_name(budget: Mapping[str, Any]) -> str:
    scope = budget.get("scope")
    ident = budget.get("id", "budget")
    return f"{scope} budget {ident}" if scope else f"budget {ident}"


def bar(fraction: float, width: int = 20) -> str:
    fraction = max(0.0, min(1.0, fraction))
    filled = round(fraction * width)
    return "█" * filled + "░" * (width - filled)


def today_line(status: Mapping[str, Any] | None) -> str:
    today = (status or {}).get("today") or {}
    if not today:
        return "Today: no data"
    requests = int(today.get("requests") or 0)
    return f"Today: {requests} call{'s' if requests != 1 else ''} · {money(today.get('cost_usd') or 0)}"


def refusal_line(status: Mapping[str, Any] | None, now: float | None = None) -> str | None:
    refusal = (status or {}).get("last_refusal")
    if not refusal:
        return None
    who = " · ".join(str(refusal[k]) for k in ("client", "model") if refusal.get(k))
    at = short_date(refusal.get("at"), now) if refusal.get("at") else ""
    head = f"Last refused{(' ' + at) if at else ''}{(' (' + who + ')') if who else ''}"
    return f"{head}: {refusal.get('message') or refusal.get('code') or 'refused'}"


def bundle_line(status: Mapping[str, Any] | None) -> str | None:
    bundle = (status or {}).get("bundle")
    if not bundle:
        return None
    age = bundle.get("age_s")
    age_text = duration(age) + " old" if age is not None else "age unknown"
    stale = " (STALE)" if bundle.get("stale") else ""
    return f"Policy bundle {bundle.get('revision', '?')} from {bundle.get('source', '?')}, {age_text}{stale}"


def duration(seconds: float | int | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def headline(status: Mapping[str, Any] | None) -> str:
    state = health(status)
    if state is Health.NOT_RUNNING:
        return "Governor: agent not running"
    if state is Health.BLOCKED:
        return "Governor: blocked"
    if state is Health.WARNING:
        return "Governor: governed, with warnings"
    return "Governor: governed"


def _breakdown_entry(value: Any) -> tuple[float, int | None]:
    """(cost, requests) from a by_model/by_client value: a number (cost) or a dict."""
    if isinstance(value, Mapping):
        requests = value.get("requests")
        return float(value.get("cost_usd") or 0), int(requests) if requests is not None else None
    try:
        return float(value), None
    except (TypeError, ValueError):
        return 0.0, None


def breakdown(status: Mapping[str, Any] | None, key: str) -> list[tuple[str, float, int | None]]:
    """[(name, cost, requests)] for `today.by_model` / `today.by_client`, costliest first."""
    table = ((status or {}).get("today") or {}).get(key) or {}
    rows = [(str(name), *_breakdown_entry(value)) for name, value in table.items()]
    return sorted(rows, key=lambda row: (-row[1], row[0]))


def render_text(status: Mapping[str, Any], now: float | None = None) -> str:
    """`governor status`: the whole picture in a terminal's width."""
    lines = [
        f"{headline(status)}  (agent {status.get('version', '?')}, up {duration(status.get('uptime_s'))}, "
        f"{status.get('listen', '?')}, {status.get('inflight', 0)} in flight)"
    ]
    if bundle_line(status):
        lines.append(bundle_line(status) or "")
    plane = status.get("control_plane")
    if plane:
        lines.append(f"Control plane {plane.get('url', '?')}: {'connected' if plane.get('connected') else 'NOT connected'}")
    if budgets(status):
        lines.append("Budgets:")
        for budget in budgets(status):
            pct = budget_pct(budget)
            flag = "  BLOCKED" if budget_exhausted(budget) and budget.get("on_breach", "block") == "block" else ""
            lines.append(f"  {bar(pct / 100, 20)} {pct:5.1f}%  {budget_name(budget)}: {budget_line(budget, now)}{flag}")
    today = status.get("today") or {}
    if today:
        tokens = today.get("tokens")
        lines.append(today_line(status) + (f" · {int(tokens):,} tokens" if tokens is not None else ""))
        for key, label in (("by_client", "by client"), ("by_model", "by model")):
            rows = breakdown(status, key)
            if rows:
                parts = [f"{name} {money(cost)}" + (f" ({n})" if n is not None else "") for name, cost, n in rows[:6]]
                lines.append(f"  {label}: " + ", ".join(parts))
    refusals = (status.get("refusals") or [])[:5]
    if len(refusals) > 1:
        lines.append("Last refusals:")
        for refusal in refusals:
            lines.append("  " + (refusal_line({"last_refusal": refusal}, now) or "").removeprefix("Last refused "))
    elif refusal_line(status, now):
        lines.append(refusal_line(status, now) or "")
    providers = status.get("providers") or {}
    if providers:
        lines.append(
            "Providers: " + ", ".join(f"{name} {info.get('credential', '?')}" for name, info in sorted(providers.items()))
        )
    managed = status.get("managed") or {}
    if managed:  # set by IT through the MDM, and locked
        lines.append("Managed: " + ", ".join(f"{key} (from {source})" for key, source in sorted(managed.items())))
    return "\n".join(lines)
