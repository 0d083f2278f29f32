"""Budget arithmetic: windows, which budgets apply, admission, rate limits.

Pure: every function takes `now` (unix seconds) and the bundle's budgets as
plain attributes (`BudgetSpec`), so the window math runs under a frozen clock
and this module does not wait for the bundle model.

Money: the bundle speaks integer micro-USD, prices speak integer nano-USD per
token. The ledger keeps nano-USD (1 micro = 1000 nano) so that thousands of
sub-micro-dollar calls add up exactly; limits are converted once here.

Windows. `resets_at` is the end of the window the control plane counted
`spent_micro_usd` in. The current window is derived from it and rolls over
locally when it ends, also when no new bundle arrives: minute, hour, day and
week by their length, month by calendar months from the `resets_at` anchor
(a window ending on the 31st ends on the last day of shorter months). Without
`resets_at` the windows are aligned in UTC (minute, hour, midnight, Monday,
the 1st). `total` never rolls; `manual` rolls only when the control plane
resets it (the bundle's `spent` drops).

Admission of a request against one budget's current window:

    committed = spent acknowledged by the control plane (bundle)
              + local settlements it has not counted yet
              + outstanding reservations
    admitted  ⇔ committed + this request's worst case ≤ limit

for every `block` budget, all or none. Because the check includes the worst
case and reservations are taken in the same transaction, a `block` budget is
exceeded only when a call costs more than its reservation (never by more than
one request's worst case). `warn` budgets never block. At ≥ 80 % of any budget
`X-Langwatch-Budget-Warning: <scope>:<pct>` (comma-joined) is sent.
"""

from __future__ import annotations

import calendar
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from agent.core.errors import GatewayError

NANO_PER_MICRO = 1000
WARNING_PCT = 80
WARNING_HEADER = "X-Langwatch-Budget-Warning"

WINDOW_SECONDS = {"minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}
WINDOWS = ("minute", "hour", "day", "week", "month", "total", "manual")
_MONDAY_OFFSET = 4 * 86400  # 1970-01-01 was a Thursday


class BudgetSpec(Protocol):
    """What this module reads from a bundle budget (`agent.core.bundle.Budget`)."""

    id: str
    scope: str
    scope_id: str
    window: str
    limit_micro_usd: int
    spent_micro_usd: int
    resets_at: int | None
    on_breach: str


class RateLimitSpec(Protocol):
    rpm: int | None
    rpd: int | None


@dataclass(frozen=True, slots=True)
class Identity:
    """Who this laptop's traffic belongs to (from the bundle)."""

    vk_id: str | None = None
    project_id: str | None = None
    principal_id: str | None = None
    team_id: str | None = None
    organization_id: str | None = None


@dataclass(frozen=True, slots=True)
class Window:
    start: int  # unix seconds, inclusive; the ledger keys a budget's totals by it
    end: int | None  # exclusive; None for total and manual windows


@dataclass(frozen=True, slots=True)
class BudgetLine:
    """One applicable budget in its current window: what admission reserves on."""

    budget_id: str
    scope: str
    window: str
    on_breach: str  # "block" | "warn"
    limit_nano: int
    window_start: int
    window_end: int | None
    # The bundle's spent, when the bundle counted this very window; else 0.
    bundle_spent_nano: int
    provider: str | None = None  # set for a provider-filtered budget

    @property
    def blocks(self) -> bool:
        return self.on_breach != "warn"

    @property
    def label(self) -> str:
        return f"{self.scope}/{self.provider}" if self.provider else self.scope


@dataclass(frozen=True, slots=True)
class Totals:
    """The ledger's running totals for one budget window, in nano-USD."""

    spent_acked: int = 0  # the control plane's count (last bundle)
    delivered: int = 0  # delivered to the control plane, not yet in its count
    settled_unacked: int = 0  # settled locally, not delivered yet
    reserved: int = 0  # outstanding worst cases of requests in flight

    @property
    def spent(self) -> int:
        return self.spent_acked + self.delivered + self.settled_unacked

    @property
    def committed(self) -> int:
        return self.spent + self.reserved


@dataclass(frozen=True, slots=True)
class Admission:
    admitted: bool
    refusal: GatewayError | None = None  # 402 budget_exceeded, rendered per dialect by errors.render
    warning: str | None = None  # value of X-Langwatch-Budget-Warning


# --- windows ----------------------------------------------------------------


def current_window(window: str, resets_at: int | None, now: float) -> Window:
    if window in ("total", "manual"):
        return Window(0, None)
    if window == "month":
        return _month_window(resets_at, now)
    length = WINDOW_SECONDS.get(window)
    if length is None:
        raise ValueError(f"unknown budget window {window!r}; expected one of {', '.join(WINDOWS)}")
    if not resets_at:
        offset = _MONDAY_OFFSET if window == "week" else 0
        start = (int(now) - offset) // length * length + offset
        return Window(start, start + length)
    # The k-th window after (or before) the one ending at resets_at.
    k = math.floor((now - resets_at) / length) + 1
    end = resets_at + k * length
    return Window(end - length, end)


def _add_months(anchor: datetime, months: int) -> int:
    total = anchor.year * 12 + anchor.month - 1 + months
    year, month = divmod(total, 12)
    day = min(anchor.day, calendar.monthrange(year, month + 1)[1])
    return int(anchor.replace(year=year, month=month + 1, day=day).timestamp())


def _month_window(resets_at: int | None, now: float) -> Window:
    if not resets_at:
        t = datetime.fromtimestamp(now, UTC)
        first = datetime(t.year, t.month, 1, tzinfo=UTC)
        return Window(int(first.timestamp()), _add_months(first, 1))
    anchor = datetime.fromtimestamp(resets_at, UTC)
    # Always count from the anchor so that day clamping never drifts (31 → 28 → 28 …).
    k = (datetime.fromtimestamp(now, UTC).year - anchor.year) * 12
    k += datetime.fromtimestamp(now, UTC).month - anchor.month
    k -= 1
    while _add_months(anchor, k) > now:
        k -= 1
    while _add_months(anchor, k + 1) <= now:
        k += 1
    return Window(_add_months(anchor, k), _add_months(anchor, k + 1))


def bundle_window(budget: BudgetSpec) -> Window:
    """The window the bundle's `spent_micro_usd` was counted in."""
    if budget.window in ("total", "manual") or not budget.resets_at:
        # Without resets_at the bundle counted the window current when it was built; callers
        # compare against the current window, which is what a fresh bundle means.
        return Window(-1, None) if budget.window not in ("total", "manual") else Window(0, None)
    return current_window(budget.window, budget.resets_at, budget.resets_at - 1)


# --- which budgets apply ------------------------------------------------------


def provider_filter(budget: BudgetSpec) -> str | None:
    """The provider a budget is restricted to: `provider_key`, or `…|provider:<id>` in scope_id."""
    explicit = getattr(budget, "provider_key", None)
    if explicit:
        return str(explicit)
    scope_id = budget.scope_id or ""
    if "|provider:" in scope_id:
        return scope_id.split("|provider:", 1)[1]
    return None


def _scope_matches(budget: BudgetSpec, who: Identity) -> bool:
    # The bundle is materialised for this laptop's key, so its budgets apply to it. The check
    # only guards against a bundle that carries someone else's bucket.
    target = (budget.scope_id or "").split("|provider:", 1)[0]
    expected = {
        "virtual_key": who.vk_id,
        "project": who.project_id,
        "principal": who.principal_id,
        "team": who.team_id,
        "organization": who.organization_id,
    }.get(budget.scope)
    if budget.scope == "group" and who.principal_id and ":" in target:
        return target.rsplit(":", 1)[1] == who.principal_id
    return not (expected and target and target != expected)


def budget_line(b: BudgetSpec, now: float) -> BudgetLine:
    """A budget in its current window, for admission and for the spend view."""
    win = current_window(b.window, b.resets_at, now)
    counted = bundle_window(b)
    same_window = counted.start in (-1, win.start)
    return BudgetLine(
        budget_id=b.id,
        scope=b.scope,
        window=b.window,
        on_breach=b.on_breach,
        limit_nano=int(b.limit_micro_usd) * NANO_PER_MICRO,
        window_start=win.start,
        window_end=win.end,
        bundle_spent_nano=int(b.spent_micro_usd) * NANO_PER_MICRO if same_window else 0,
        provider=provider_filter(b),
    )


def applicable_budgets(
    budgets: Sequence[BudgetSpec],
    who: Identity,
    provider_ids: Collection[str],
    now: float,
) -> list[BudgetLine]:
    """The budgets a request to a provider (known by any of `provider_ids`) debits."""
    lines = []
    for b in budgets:
        provider = provider_filter(b)
        if provider is not None and provider not in provider_ids:
            continue
        if _scope_matches(b, who):
            lines.append(budget_line(b, now))
    return lines


# --- admission ---------------------------------------------------------------


def percent_used(line: BudgetLine, totals: Totals) -> int:
    if line.limit_nano <= 0:
        return 100
    return totals.committed * 100 // line.limit_nano


def warning_header(lines: Sequence[tuple[BudgetLine, Totals]]) -> str | None:
    parts = [f"{line.label}:{pct}" for line, t in lines if (pct := percent_used(line, t)) >= WARNING_PCT]
    return ",".join(parts) or None


def decide_admission(lines: Sequence[tuple[BudgetLine, Totals]], worst_case_nano: int, now: float) -> Admission:
    """Admit when every `block` budget can cover committed + this request's worst case."""
    warning = warning_header(lines)
    short = [
        (line, t)
        for line, t in lines
        if line.blocks and t.committed + worst_case_nano > line.limit_nano
    ]
    if not short:
        return Admission(True, None, warning)
    # Name the tightest budget: the one with the least room left.
    line, totals = min(short, key=lambda lt: lt[0].limit_nano - lt[1].committed)
    return Admission(False, budget_exceeded(line, totals, worst_case_nano, now), warning)


def budget_exceeded(line: BudgetLine, totals: Totals, worst_case_nano: int, now: float) -> GatewayError:
    left = max(0, line.limit_nano - totals.committed)
    per = f"per {line.window}" if line.window in WINDOW_SECONDS or line.window == "month" else line.window
    message = (
        f"The {line.label} spending limit ({per}) of {format_usd(line.limit_nano)} cannot cover this request: "
        f"{format_usd(left)} left, and this request may cost up to {format_usd(worst_case_nano)}. "
        f"{_reset_sentence(line, now)}"
    )
    meta = {"budget_id": line.budget_id, "budget_scope": line.scope, "budget_window": line.window}
    if line.provider:
        meta["budget_provider"] = line.provider
    return GatewayError("budget_exceeded", message, status=402, meta=meta)


def _reset_sentence(line: BudgetLine, now: float) -> str:
    if line.window == "total":
        return "This is a lifetime budget and does not reset; ask your admin to raise it."
    if line.window_end is None:
        return "It resets when an admin resets it."
    at = datetime.fromtimestamp(line.window_end, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"It resets at {at} (in {format_duration(line.window_end - now)})."


def format_usd(nano: int) -> str:
    dollars = Decimal(nano) / Decimal(1_000_000_000)
    if nano and abs(dollars) < Decimal("0.01"):
        return f"${dollars.quantize(Decimal('0.000001'))}"
    return f"${dollars.quantize(Decimal('0.01'))}"


def format_duration(seconds: float) -> str:
    s = max(0, math.ceil(seconds))
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"


# --- rate limits ---------------------------------------------------------------

RATE_WINDOWS = {"rpm": "minute", "rpd": "day"}


def rate_windows(now: float) -> dict[str, Window]:
    """Fixed UTC-aligned windows for rpm and rpd counters (tpm is not enforced, as upstream)."""
    return {kind: current_window(win, None, now) for kind, win in RATE_WINDOWS.items()}


def limits_of(spec: RateLimitSpec | Mapping[str, int | None] | None) -> dict[str, int]:
    if spec is None:
        return {}
    get = spec.get if isinstance(spec, Mapping) else (lambda k: getattr(spec, k, None))
    return {kind: int(v) for kind in RATE_WINDOWS if (v := get(kind)) is not None and int(v) > 0}


def check_rate_limits(limits: Mapping[str, int], counts: Mapping[str, int], now: float) -> GatewayError | None:
    """429 when admitting one more request would exceed rpm or rpd; `counts` are this window's."""
    windows = rate_windows(now)
    for kind in ("rpd", "rpm"):  # name the longer wait first
        limit = limits.get(kind)
        if limit is None or counts.get(kind, 0) < limit:
            continue
        end = windows[kind].end
        assert end is not None
        retry_after = max(1, math.ceil(end - now))
        unit = "minute" if kind == "rpm" else "day"
        message = (
            f"Rate limit reached: {limit} requests per {unit}. "
            f"Retry in {format_duration(retry_after)}."
        )
        meta = {"limit": kind, "limit_value": limit}
        return GatewayError("rate_limited", message, status=429, meta=meta, headers={"Retry-After": str(retry_after)})
    return None
