"""The local spend page: one self-contained HTML document (no script, no CDN,
inline CSS and SVG) that the agent serves at `/_governor/` (agent/localapi.py).

`render()` is a pure function of the status JSON, the recent calls, the daily
totals and the recent refusals. `open_in_browser()` is what `governor open`
and the tray do: ask the agent for a one-time link (with the local key) and
hand that to the browser, which trades it for a session cookie; the key never
appears in a URL, a browser history or a page.
"""

from __future__ import annotations

import html
import time
import webbrowser
from collections.abc import Mapping, Sequence
from typing import Any

from agent import statusview as view

MAX_CALLS = 100
CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
CHART_W, CHART_H, CHART_PAD = 940, 160, 24
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
.refused{color:#cf222e} svg text{fill:#656d76;font-size:11px} svg .day{fill:#0969da} svg .today{fill:#1a7f37}
nav a{margin-right:12px}
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


def _chart(days: Sequence[tuple[str, float, int]]) -> str:
    """Spend per day as inline SVG bars, oldest left; each bar's tooltip gives the day, cost and calls."""
    if not days:
        return '<p class="muted">No spend recorded yet.</p>'
    top = max(cost for _, cost, _ in days) or 1.0
    slot = (CHART_W - CHART_PAD) / len(days)
    label_every = 1 if len(days) <= 16 else 2
    parts = [
        f'<svg role="img" aria-label="spend per day" width="100%" viewBox="0 0 {CHART_W} {CHART_H + 2 * CHART_PAD}">',
        f'<text x="0" y="12">{_e(view.money(top))}</text>',
        f'<line x1="{CHART_PAD}" y1="{CHART_H + CHART_PAD}" x2="{CHART_W}" y2="{CHART_H + CHART_PAD}" stroke="#d0d7de"/>',
    ]
    for i, (day, cost, n) in enumerate(days):
        height = max(1.0 if cost > 0 else 0.0, CHART_H * cost / top)
        x = CHART_PAD + i * slot + slot * 0.15
        css = "today" if i == len(days) - 1 else "day"
        parts.append(
            f'<rect class="{css}" x="{x:.1f}" y="{CHART_H + CHART_PAD - height:.1f}" width="{slot * 0.7:.1f}" '
            f'height="{height:.1f}" rx="2"><title>{_e(day)}: {_e(view.money(cost))}, {n} call{"" if n == 1 else "s"}</title></rect>'
        )
        if i % label_every == 0 or i == len(days) - 1:
            parts.append(f'<text x="{x + slot * 0.35:.1f}" y="{CHART_H + CHART_PAD + 16}" text-anchor="middle">{_e(day[5:])}</text>')
    parts.append("</svg>")
    total = sum(cost for _, cost, _ in days)
    calls = sum(n for _, _, n in days)
    return "".join(parts) + f'<p class="muted">{_e(view.money(total))} over {len(days)} days, {calls:,} calls</p>'


def _refusals(refusals: Sequence[Mapping[str, Any]], now: float | None) -> str:
    if not refusals:
        return '<p class="muted">No call refused since the agent started.</p>'
    rows = "".join(
        f"<tr><td>{_e(view.short_date(r.get('at'), now))}</td><td class=refused>{_e(r.get('code'))}</td>"
        f"<td>{_e(r.get('client'))}</td><td>{_e(r.get('model'))}</td><td>{_e(r.get('message'))}</td></tr>"
        for r in refusals[:MAX_CALLS]
    )
    return f"<table><tr><th>at</th><th>code</th><th>client</th><th>model</th><th>why</th></tr>{rows}</table>"


def render(
    status: Mapping[str, Any],
    calls: Sequence[Mapping[str, Any]] = (),
    now: float | None = None,
    days: Sequence[tuple[str, float, int]] = (),
    refusals: Sequence[Mapping[str, Any]] = (),
) -> str:
    """The whole page as a string: a pure function of its inputs (`days`: (day, cost_usd, calls), oldest first)."""
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
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<style>{STYLE}</style></head><body>
<h1>Governor spend <span class="state" style="background:{COLOURS[state]}">{_e(state.value)}</span></h1>
<p class="muted">agent {_e(status.get('version', '?'))} at {_e(status.get('listen', '?'))} · generated {generated}{dashboard}</p>
<nav><a href="/_governor/">refresh</a><a href="#calls">calls</a><a href="#refusals">refusals</a></nav>
{f'<p>{_e(bundle)}</p>' if bundle else ''}
{f'<p class="refused">{_e(refusal)}</p>' if refusal else ''}
<h2>Budgets</h2>{_budgets(status, now)}
<h2>Spend per day</h2>{_chart(days)}
<h2>{_e(view.today_line(status))}</h2>
{_breakdown(status, 'by_model', 'model')}
{_breakdown(status, 'by_client', 'client')}
<h2 id="calls">Last {min(len(calls), MAX_CALLS)} calls</h2>{_calls(calls, now)}
<h2 id="refusals">Refusals</h2>{_refusals(refusals, now)}
</body></html>
"""


def render_signin(reason: str) -> str:
    """The page without a session: how to get one (no data, no key, no form)."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Governor · spend</title>
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<style>{STYLE}</style></head><body>
<h1>Governor spend</h1>
<p>{_e(reason)}</p>
<p>Run <code>governor open</code> (or the tray's <b>Open spend page</b>): it opens this page with a
fresh link that works once, for a minute.</p>
</body></html>
"""


def open_in_browser(local: Any, open_browser: bool = True) -> str:
    """One API call (a one-time link), one browser tab; returns the link (already spent once opened)."""
    url = str(local.page_link()["url"])
    if open_browser:
        webbrowser.open(url)
    return url
