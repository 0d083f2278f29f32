"""Budget arithmetic under a frozen clock: `now` is always passed explicitly."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agent.core.budget import (
    WARNING_PCT,
    BudgetLine,
    Identity,
    Totals,
    applicable_budgets,
    budget_line,
    check_rate_limits,
    current_window,
    decide_admission,
    limits_of,
    rate_windows,
    warning_header,
)
from agent.core.bundle import Budget, RateLimits


def ts(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp())  # type: ignore[misc]


def budget(**kw: object) -> Budget:
    fields: dict[str, object] = dict(id="b1", scope="project", scope_id="proj_1", window="day", limit_micro_usd=10_000_000,
                                     spent_micro_usd=0, resets_at=None, on_breach="block")
    fields.update(kw)
    return Budget.model_validate(fields)


# --- windows -------------------------------------------------------------------------


def test_fixed_window_from_resets_at() -> None:
    resets = ts(2026, 12, 5, 0, 0)
    assert current_window("day", resets, ts(2026, 12, 4, 13, 0)) == current_window("day", resets, resets - 1)
    w = current_window("day", resets, ts(2026, 12, 4, 13, 0))
    assert (w.start, w.end) == (ts(2026, 12, 4), resets)


def test_fixed_windows_roll_over_locally_without_a_new_bundle() -> None:
    resets = ts(2026, 12, 5, 0, 0)
    w = current_window("day", resets, resets)  # the instant the window ends
    assert (w.start, w.end) == (resets, ts(2026, 12, 6))
    w = current_window("hour", ts(2026, 12, 4, 10, 30), ts(2026, 12, 4, 13, 45))
    assert (w.start, w.end) == (ts(2026, 12, 4, 13, 30), ts(2026, 12, 4, 14, 30))
    w = current_window("minute", 1_000_020, 1_000_020 + 60 * 5 + 1)
    assert (w.start, w.end) == (1_000_320, 1_000_380)
    w = current_window("week", ts(2026, 12, 7), ts(2026, 12, 20, 12))
    assert (w.start, w.end) == (ts(2026, 12, 14), ts(2026, 12, 21))


def test_windows_without_resets_at_align_in_utc() -> None:
    now = ts(2026, 12, 4, 13, 14, 15)  # a Friday
    assert current_window("minute", None, now).start == ts(2026, 12, 4, 13, 14)
    assert current_window("hour", None, now).start == ts(2026, 12, 4, 13)
    assert current_window("day", None, now).start == ts(2026, 12, 4)
    assert current_window("week", None, now).start == ts(2026, 11, 30)  # Monday
    w = current_window("month", None, now)
    assert (w.start, w.end) == (ts(2026, 12, 1), ts(2027, 1, 1))


def test_month_windows_follow_the_calendar_from_the_anchor() -> None:
    anchor = ts(2027, 1, 31, 9)  # the bundle's window ends on Jan 31 09:00
    w = current_window("month", anchor, ts(2027, 1, 15))
    assert (w.start, w.end) == (ts(2026, 12, 31, 9), anchor)
    w = current_window("month", anchor, ts(2027, 2, 10))
    assert (w.start, w.end) == (anchor, ts(2027, 2, 28, 9))  # clamped to February
    w = current_window("month", anchor, ts(2027, 3, 30))
    assert (w.start, w.end) == (ts(2027, 2, 28, 9), ts(2027, 3, 31, 9))  # back to the 31st: no drift 31 → 28 → 28


def test_total_never_rolls_and_manual_only_by_bundle() -> None:
    for window in ("total", "manual"):
        w = current_window(window, ts(2026, 1, 1), ts(2030, 1, 1))
        assert (w.start, w.end) == (0, None)


def test_unknown_window_is_refused() -> None:
    with pytest.raises(ValueError, match="fortnight"):
        current_window("fortnight", None, 0)


def test_bundle_spent_counts_only_in_the_window_it_was_counted_in() -> None:
    b = budget(spent_micro_usd=3_000_000, resets_at=ts(2026, 12, 5))
    assert budget_line(b, ts(2026, 12, 4, 23)).bundle_spent_nano == 3_000_000_000
    assert budget_line(b, ts(2026, 12, 5, 1)).bundle_spent_nano == 0  # rolled over: a fresh window


# --- which budgets apply --------------------------------------------------------------


def test_all_bundle_budgets_apply_unless_a_provider_filter_excludes_the_provider() -> None:
    who = Identity(vk_id="vk_1", project_id="proj_1", principal_id="u_1")
    budgets = [
        budget(id="org", scope="organization", scope_id="org_1"),
        budget(id="vk", scope="virtual_key", scope_id="vk_1"),
        budget(id="anthropic-only", scope="project", scope_id="proj_1", provider_key="mp_anthropic"),
        budget(id="openai-only", scope="project", scope_id="proj_1|provider:mp_openai"),
        budget(id="someone-else", scope="principal", scope_id="u_2"),
        budget(id="my-group-bucket", scope="group", scope_id="grp_1:u_1"),
    ]
    lines = applicable_budgets(budgets, who, {"anthropic", "mp_anthropic"}, ts(2026, 12, 4))
    assert [ln.budget_id for ln in lines] == ["org", "vk", "anthropic-only", "my-group-bucket"]
    assert lines[2].provider == "mp_anthropic" and lines[2].label == "project/mp_anthropic"


# --- admission ---------------------------------------------------------------------------


def line(limit: int, on_breach: str = "block", scope: str = "project", window: str = "month") -> BudgetLine:
    return BudgetLine("b_" + scope, scope, window, on_breach, limit, ts(2026, 12, 1), ts(2027, 1, 1), 0)


def test_admits_when_committed_plus_worst_case_fits() -> None:
    now = ts(2026, 12, 4)
    lim = 1_000_000_000
    t = Totals(spent_acked=300_000_000, delivered=100_000_000, settled_unacked=100_000_000, reserved=100_000_000)
    assert decide_admission([(line(lim), t)], 400_000_000, now).admitted
    assert not decide_admission([(line(lim), t)], 400_000_001, now).admitted


def test_402_names_the_limit_what_is_left_and_when_it_resets() -> None:
    now = ts(2026, 12, 29, 12)
    tight = line(200_000_000_000, scope="project")  # $200 per month
    roomy = line(10**15, scope="organization")
    decision = decide_admission(
        [(roomy, Totals()), (tight, Totals(spent_acked=199_580_000_000))], 800_000_000, now
    )
    assert not decision.admitted and decision.refusal is not None
    r = decision.refusal
    assert (r.http_status, r.code) == (402, "budget_exceeded")
    assert r.meta == {"budget_id": "b_project", "budget_scope": "project", "budget_window": "month"}
    assert "project spending limit (per month) of $200.00" in r.message
    assert "$0.42 left" in r.message and "up to $0.80" in r.message
    assert "2027-01-01 00:00 UTC (in 2 d 12 h)" in r.message


def test_warn_budgets_never_block_but_warn() -> None:
    now = ts(2026, 12, 4)
    decision = decide_admission([(line(100, on_breach="warn"), Totals(spent_acked=150))], 10**9, now)
    assert decision.admitted and decision.warning == "project:150"


def test_warning_header_at_80_percent_comma_joined() -> None:
    lines = [
        (line(1000, scope="project"), Totals(spent_acked=799)),
        (line(1000, scope="team"), Totals(spent_acked=700, reserved=100)),
        (line(1000, scope="organization"), Totals(settled_unacked=950)),
    ]
    assert WARNING_PCT == 80
    assert warning_header(lines) == "team:80,organization:95"
    assert warning_header(lines[:1]) is None


def test_no_budgets_admits_everything() -> None:
    assert decide_admission([], 10**12, 0).admitted


# --- rate limits ----------------------------------------------------------------------------


def test_rate_limits_rpm_and_rpd_with_retry_after() -> None:
    now = ts(2026, 12, 4, 13, 14, 15)
    limits = limits_of(RateLimits(rpm=10, rpd=100, tpm=5))
    assert limits == {"rpm": 10, "rpd": 100}  # tpm is not enforced, as in the reference gateway
    assert check_rate_limits(limits, {"rpm": 9, "rpd": 50}, now) is None
    r = check_rate_limits(limits, {"rpm": 10, "rpd": 50}, now)
    assert r is not None and (r.http_status, r.code, r.headers["Retry-After"]) == (429, "rate_limited", "45")
    r = check_rate_limits(limits, {"rpm": 10, "rpd": 100}, now)
    assert r is not None and r.headers["Retry-After"] == str(ts(2026, 12, 5) - now)
    assert rate_windows(now)["rpm"].start == ts(2026, 12, 4, 13, 14)
    assert limits_of(None) == {} and limits_of({"rpm": 0, "rpd": None}) == {}
