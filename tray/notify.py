"""Which status changes deserve a desktop notification, at most one per event
per cooldown: budget crossing 80 % and 100 %, a new refused call, key revoked,
the policy bundle going stale (control plane unreachable too long).

Pure apart from the injected clock: `events(previous, current)` compares two
status payloads and returns (title, message) pairs to show.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from agent import statusview as view

COOLDOWN_S = 15 * 60.0
THRESHOLDS = (80.0, 100.0)
REVOKED_STATES = frozenset({"revoked", "vk_revoked"})


class Notifier:
    def __init__(self, cooldown_s: float = COOLDOWN_S, clock: Callable[[], float] = time.time):
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._last_shown: dict[str, float] = {}

    def _allow(self, key: str) -> bool:
        now = self.clock()
        last = self._last_shown.get(key)
        if last is not None and now - last < self.cooldown_s:
            return False
        self._last_shown[key] = now
        return True

    def events(self, previous: Mapping[str, Any] | None, current: Mapping[str, Any] | None) -> list[tuple[str, str]]:
        if current is None:
            return []  # "agent not running" is shown by the icon, not a popup
        out: list[tuple[str, str]] = []
        before = {b.get("id"): view.budget_pct(b) for b in view.budgets(previous)} if previous else {}
        for budget in view.budgets(current):
            pct = view.budget_pct(budget)
            old = before.get(budget.get("id"), 0.0 if previous else pct)
            crossed = [t for t in THRESHOLDS if old < t <= pct]
            if crossed:
                threshold = max(crossed)
                key = f"budget:{budget.get('id')}:{threshold:.0f}"
                if self._allow(key):
                    title = "Budget used up" if threshold >= 100 else f"Budget at {pct:.0f}%"
                    out.append((title, f"{view.budget_name(budget)}: {view.budget_line(budget)}"))
        refusal = current.get("last_refusal")
        old_refusal = (previous or {}).get("last_refusal")
        if refusal and previous is not None and refusal != old_refusal and self._allow(f"refusal:{refusal.get('code')}"):
            out.append(("Call refused", view.refusal_line(current) or "a call was refused"))
        if str(current.get("state")) in REVOKED_STATES and str((previous or {}).get("state")) not in REVOKED_STATES:
            if self._allow("revoked"):
                out.append(("Key revoked", "Your Governor key was revoked: calls are refused. Contact your admin."))
        if view.bundle_stale(current) and not view.bundle_stale(previous) and self._allow("stale"):
            out.append(
                ("Control plane unreachable", "The policy bundle is past its stale limit; "
                 "check your network, then tray → Sync now")
            )
        return out
