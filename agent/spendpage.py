"""The local spend page: one self-contained HTML document (no script, no CDN)
rendered from the status JSON and the recent calls.

`render()` is pure. `write_and_open()` fetches both with the local key,
writes the page to the data dir (0600) and opens it as a file, so the key
never appears in a URL, a browser history or a page that a script could read.
"""

from __future__ import annotations

import html
import os
import time
import webbrowser
from pathlib import Path
from typing import Any, Mapping, Sequence

from agent import statusview as view

PAGE_FILE = "spend.html"
MAX_CALLS = 100
COLOURS = {
    view.Health.GOVERNED: "#1a7f37",
    view.Health.WARNING: "#bf8700",
    view.Health.BLOCKED: "#cf222e",
    view.Health.NOT_RUNNING: "#6e7781",
}

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:980px;color:#1f2328;background:#fff;padding:0 16px}
h1{font-size:20px;margin:0 0 4px} h2{font-size:15px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.state{display:inline-block;padding:2px 10px;border-radius:12px;color:#fff;font-weight:600}
.muted{color:#656d76} table{border-collapse:collapse;width:100%} td,th{padding:4px 8px;text-align:left;border-bottom:1px solid #eaeef2}
th{font-weight:600;color:#656d76;font-size:12px;text-transform:uppercase} td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.bar{background:#eaeef2;border-radius:4px;height:10px;min-width:160px} .bar>span{display:block;height:10px;border-radius:4px}
.refused{color:#cf222e}
@media (prefers-color-scheme:dark){body{background:#0d1117;color:#e6edf3}td,th{border-color:#30363d}.bar{background:#30363d}h2{border-color:#30363d}}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _bar(fraction: float, colour: str) -> str:
    pct = max(0.0, min(1.0, fraction)) * 100
    return f'<div class="bar"><span style="width:{pct:.1f}%;background:{colour}"></span></div>'


def _budgets(status: Mapping[str, Any], now: float | None) -> str:
    lines = view.budgets(status)
    if not lines:
        return '<p class="muted">No budgets apply to this laptop.</p>'
    rows = []
    for budget in lines:
        pct = view.budget_pct(budget)
        colour = "#cf222e" if view.budget_exhausted(budget) else "#bf8700" if pct >= view.WARN_PCT else "#1a7f37"
        rows.append(
            f"<tr><td>{_e(view.budget_name(budget))}</td><td>{_bar(pct / 100, colour)}</td>"
            f'<td class="num">{pct:.1f}%</td><td>{_e(view.budget_line(budget, now))}</td>'
            f"<td>{_e(budget.get('on_breach', ''))}</td></tr>"
        )
    return (
        "<table><tr><th>budget</th><th>used</th><th class=num>%</th><th>spend</th><th>on breach</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _breakdown(status: Mapping[str, Any], key: str, label: str) -> str:
    rows = view.breakdown(status, key)
    if not rows:
        return f'<p class="muted">No calls today by {label}.</p>'
    top = max(cost for _, cost, _ in rows) or 1.0
    body = "".join(
        f"<tr><td>{_e(name)}</td><td>{_bar(cost / top, '#0969da')}</td>"
        f'<td class="num">{_e(view.money(cost))}</td><td class="num">{"" if n is None else n}</td></tr>'
        for name, cost, n in rows
    )
    return f"<table><tr><th>{label}</th><th>cost today</th><th class=num>$</th><th class=num>calls</th></tr>{body}</table>"


def _calls(calls: Sequence[Mapping[str, Any]], now: float | None) -> str:
    if not calls:
        return '<p class="muted">No calls since the agent started.</p>'
    rows = []
    for call in calls[:MAX_CALLS]:
        usage = call.get("usage") or {}
        tokens = sum(int(usage.get(k) or 0) for k in ("input_tokens", "output_tokens"))
        status = call.get("status")
        refused = status is not None and int(status) >= 400
        cost = call.get("cost_usd")
        rows.append(
            f"<tr{' class=refused' if refused else ''}><td>{_e(view.short_date(call.get('started_at'), now))}</td>"
            f"<td>{_e(status)}</td><td>{_e(call.get('client'))}</td><td>{_e(call.get('model'))}</td>"
            f'<td class="num">{tokens:,}</td><td class="num">{_e(view.money(cost) if cost is not None else "")}</td>'
            f'<td class="num">{float(call.get("duration_ms") or 0):.0f} ms</td><td>{_e(call.get("error") or "")}</td></tr>'
        )
    return (
        "<table><tr><th>at</th><th>status</th><th>client</th><th>model</th><th class=num>tokens</th>"
        "<th class=num>cost</th><th class=num>latency</th><th>refusal</th></tr>" + "".join(rows) + "</table>"
    )


def render(status: Mapping[str, Any], calls: Sequence[Mapping[str, Any]] = (), now: float | None = None) -> str:
    """The whole page as a string: a pure function of its inputs."""
    state = view.health(status)
    refusal = view.refusal_line(status, now)
    bundle = view.bundle_line(status)
    plane = status.get("control_plane") or {}
    dashboard = (
        f' · <a href="{_e(plane["dashboard_url"])}">dashboard</a>' if plane.get("dashboard_url") else ""
    )
    generated = time.strftime("%Y-%m-%d %H:%M", time.localtime(now)) if now is not None else time.strftime("%Y-%m-%d %H:%M")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Governor · spend</title>
<meta name="viewport" content="width=device-width,initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<style>{STYLE}</style></head><body>
<h1>Governor spend <span class="state" style="background:{COLOURS[state]}">{_e(state.value)}</span></h1>
<p class="muted">agent {_e(status.get('version', '?'))} at {_e(status.get('listen', '?'))} · generated {generated}{dashboard}</p>
{f'<p>{_e(bundle)}</p>' if bundle else ''}
{f'<p class="refused">{_e(refusal)}</p>' if refusal else ''}
<h2>Budgets</h2>{_budgets(status, now)}
<h2>{_e(view.today_line(status))}</h2>
{_breakdown(status, 'by_model', 'model')}
{_breakdown(status, 'by_client', 'client')}
<h2>Last {min(len(calls), MAX_CALLS)} calls</h2>{_calls(calls, now)}
</body></html>
"""


def write_and_open(local: Any, data_dir: Path | str, open_browser: bool = True) -> Path:
    """Two API calls (status, calls), one file, one browser tab."""
    page = render(local.status(), local.calls())
    path = Path(data_dir) / PAGE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(page)
    if open_browser:
        webbrowser.open(path.as_uri())
    return path
