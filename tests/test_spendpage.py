"""The spend page: a pure render, the one-time link and its session cookie against a
real agent, `governor open`, and the page in headless Chromium (screenshot in docs/)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent import spendpage
from agent.core.usage import Usage
from agent.pagesession import LINK_TTL_S, PageSessions
from agent.store import HistoryRow, Store
from tests.harness import LOCAL_KEY, AgentProcess

REPO = Path(__file__).resolve().parents[1]
AUTH = {"authorization": f"Bearer {LOCAL_KEY}"}
LOAD_BUDGET_MS = 200.0

STATUS = {
    "version": "1", "listen": "127.0.0.1:8787", "state": "running", "governed": True,
    "budgets": [{"id": "m", "scope": "user", "window": "month", "limit_usd": 200, "spent_usd": 42.1, "pct": 21.05,
                 "remaining_usd": 157.9, "resets_at": 1798761600, "on_breach": "block"}],
    "today": {"requests": 2, "cost_usd": 0.5, "by_model": {"claude-<b>": {"cost_usd": 0.5, "requests": 2}}, "by_client": {}},
    "last_refusal": {"at": 1798761000, "code": "policy_denied", "message": "tool <script> denied"},
    "control_plane": {"url": "https://cp", "connected": True, "dashboard_url": "https://cp/dash"},
}
CALLS = [{"started_at": 1798761000, "status": 403, "client": "codex", "model": "gpt-5.5",
          "usage": {"input_tokens": 10, "output_tokens": 5}, "duration_ms": 12.3, "error": "policy_denied", "cost_usd": 0.25}]
DAYS = [("2026-12-01", 0.0, 0), ("2026-12-02", 1.5, 3), ("2026-12-03", 0.75, 1)]
REFUSALS = [{"at": 1798761000, "code": "budget_exceeded", "message": "monthly <budget> used up", "client": "codex", "model": "gpt-5.5"}]


def test_render_is_self_contained_and_escaped() -> None:
    page = spendpage.render(STATUS, CALLS, now=1798761600, days=DAYS, refusals=REFUSALS)
    assert page.startswith("<!doctype html>")
    assert "<script" not in page and "http://" not in page.replace("127.0.0.1:8787", "")  # no script, no CDN
    assert "tool &lt;script&gt; denied" in page and "claude-&lt;b&gt;" in page
    assert "$42.10 of $200.00 · month" in page and "21.1%" in page
    assert 'class=refused' in page and "policy_denied" in page
    assert 'href="https://cp/dash"' in page
    assert page.count("<rect ") == 3 and "2026-12-02: $1.50, 3 calls" in page  # one bar per day, tooltip
    assert "monthly &lt;budget&gt; used up" in page and "budget_exceeded" in page
    assert "$0.25" in page  # the call's cost
    assert spendpage.render(STATUS, CALLS, now=1798761600, days=DAYS, refusals=REFUSALS) == page  # pure


def test_links_are_single_use_and_expire() -> None:
    now = [1000.0]
    sessions = PageSessions(clock=lambda: now[0])
    token = sessions.new_link_token()
    session = sessions.redeem(token)
    assert session is not None and sessions.valid(session)
    assert sessions.redeem(token) is None  # spent
    late = sessions.new_link_token()
    now[0] += LINK_TTL_S + 1
    assert sessions.redeem(late) is None  # expired
    assert sessions.valid(session) and not sessions.valid("forged") and not sessions.valid(None)
    now[0] += 13 * 3600
    assert not sessions.valid(session)  # sessions end too


# --- against a real agent ------------------------------------------------------------


def bundle_with_budgets() -> dict[str, Any]:
    resets = int(time.time()) + 86400 * 12
    return {
        "revision": "7", "vk_id": "vk_test", "principal_id": "user_test", "project_id": "proj_test",
        "policy_rules": {"models": {"deny": ["-preview$"]}},
        "budgets": [
            {"id": "monthly", "scope": "principal", "scope_id": "user_test", "principal_id": "user_test", "window": "month",
             "limit_micro_usd": 50_000_000, "spent_micro_usd": 31_400_000, "resets_at": resets, "on_breach": "block"},
            {"id": "daily", "scope": "principal", "scope_id": "user_test", "principal_id": "user_test", "window": "day",
             "limit_micro_usd": 5_000_000, "spent_micro_usd": 0, "resets_at": resets, "on_breach": "warn"},
        ],
    }


def seed_history(data_dir: Path, days: int = 12) -> None:
    """Earlier days' settlements, as a laptop that ran for a while has them (the chart's bars)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    store = Store.open(data_dir / "governor.db")
    now = time.time()
    rows = [
        HistoryRow(f"hist-{back}-{i}", now - back * 86400, model, "anthropic", client,
                   Usage(model=model, input_tokens=1200, output_tokens=300), cost_nano=(200_000_000 + 90_000_000 * (back % 5)))
        for back in range(1, days)
        for i, (model, client) in enumerate([("claude-sonnet-4-5", "claude-code"), ("gpt-5.5", "codex")][: 1 + back % 2])
    ]
    try:
        asyncio.run(store.import_history(rows))
    finally:
        store.close()


def make_calls(agent: AgentProcess) -> None:
    """A few real calls through the agent to the fake provider, and two refused ones."""
    anthropic_body = {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
    openai_body = {"model": "gpt-5.5", "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(3):
        r = httpx.post(agent.base_url + "/v1/messages", json=anthropic_body, timeout=30,
                       headers={**AUTH, "anthropic-version": "2023-06-01", "user-agent": "claude-cli/2.0.14 (external, cli)"})
        assert r.status_code == 200, r.text
    r = httpx.post(agent.base_url + "/v1/chat/completions", json=openai_body, timeout=30,
                   headers={**AUTH, "user-agent": "codex_cli_rs/0.50.0"})
    assert r.status_code == 200, r.text
    for model in ("gemini-3-preview", "claude-opus-preview"):
        r = httpx.post(agent.base_url + "/v1/messages", json={**anthropic_body, "model": model}, timeout=30,
                       headers={**AUTH, "anthropic-version": "2023-06-01", "user-agent": "claude-cli/2.0.14 (external, cli)"})
        assert r.status_code == 403, r.text


@pytest.fixture(scope="module")
def page_agent(tmp_path_factory: pytest.TempPathFactory, fake_provider: Any) -> Iterator[AgentProcess]:
    root = tmp_path_factory.mktemp("spendpage")
    (root / "bundle.json").write_text(json.dumps(bundle_with_budgets()))
    seed_history(root / "agent")
    with AgentProcess(root / "agent", upstream=fake_provider.base_url, env={"GOVERNOR_BUNDLE": str(root / "bundle.json")}) as agent:
        make_calls(agent)
        # Settlement runs beside the proxy: wait until today's four calls are in the ledger.
        deadline = time.monotonic() + 10
        while httpx.get(agent.base_url + "/_governor/v1/status", headers=AUTH).json()["today"]["requests"] < 4:
            assert time.monotonic() < deadline, "calls never settled"
            time.sleep(0.05)
        yield agent


def page_link(agent: AgentProcess) -> str:
    r = httpx.post(agent.base_url + "/_governor/v1/page-link", headers=AUTH)
    assert r.status_code == 200, r.text
    return str(r.json()["url"])


def test_one_time_link_trades_for_a_session_cookie(page_agent: AgentProcess) -> None:
    base = page_agent.base_url
    assert httpx.post(base + "/_governor/v1/page-link").status_code == 401  # the key is required
    url = page_link(page_agent)
    assert url.startswith(base + "/_governor/?t=")
    with httpx.Client() as browser:
        r = browser.get(url)
        assert r.status_code == 303 and r.headers["location"] == "/_governor/"
        cookie = r.headers["set-cookie"]
        for flag in ("HttpOnly", "SameSite=Strict", "Path=/_governor", "Max-Age="):
            assert flag in cookie
        assert LOCAL_KEY not in cookie and LOCAL_KEY not in url
        page = browser.get(base + "/_governor/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.headers["referrer-policy"] == "no-referrer" and page.headers["cache-control"] == "no-store"
        assert "default-src 'none'" in page.headers["content-security-policy"]
        text = page.text
        assert "Spend per day" in text and "<rect " in text and "claude-sonnet-4-5" in text and "claude-code" in text
        assert "monthly" in text and "Refusals" in text and "claude-opus-preview" in text
        # A link inside the page, as Chromium sends it: same-origin navigation, no Origin, no Referer.
        click = browser.get(base + "/_governor/", headers={"sec-fetch-site": "same-origin", "sec-fetch-mode": "navigate"})
        assert click.status_code == 200
        assert browser.head(base + "/_governor/").status_code == 200
        # Reloading the spent link with the cookie lands on the page again; without it, it is refused.
        assert browser.get(url).status_code == 303
    spent = httpx.get(url)
    assert spent.status_code == 401 and "governor open" in spent.text and "set-cookie" not in spent.headers
    bare = httpx.get(base + "/_governor/")
    assert bare.status_code == 401 and "governor open" in bare.text
    assert httpx.get(base + "/_governor/", cookies={f"governor_session_{page_agent.port}": "forged"}).status_code == 401
    # The guard's refusals still hold on the page: another site's Origin, a non-loopback Host.
    assert httpx.get(page_link(page_agent), headers={"origin": "https://evil.example"}).status_code == 403
    assert httpx.get(page_link(page_agent), headers={"host": "evil.example"}).status_code in (403, 421)


def test_page_loads_fast(page_agent: AgentProcess) -> None:
    with httpx.Client() as browser:
        browser.get(page_link(page_agent))
        browser.get(page_agent.base_url + "/_governor/")  # warm
        timings = []
        for _ in range(10):
            started = time.perf_counter()
            r = browser.get(page_agent.base_url + "/_governor/")
            timings.append((time.perf_counter() - started) * 1000)
            assert r.status_code == 200
    timings.sort()
    print(f"spend page: median {timings[5]:.1f} ms, max {timings[-1]:.1f} ms, {len(r.content)} bytes")
    assert timings[-1] < LOAD_BUDGET_MS


def test_governor_open_prints_a_working_link(page_agent: AgentProcess) -> None:
    governor = [sys.executable, "-m", "agent.cli", "open"]
    result = subprocess.run([*governor, "--print-url"], env=page_agent.env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    url = result.stdout.strip()
    assert url.startswith(page_agent.base_url + "/_governor/?t=") and httpx.get(url).status_code == 303
    opened = subprocess.run(governor, env={**page_agent.env, "BROWSER": "true"}, capture_output=True, text=True, timeout=60)
    assert opened.returncode == 0 and "opened the spend page" in opened.stdout
    assert not list(page_agent.data_dir.glob("*.html"))  # no page file left behind any more


def test_governor_open_without_an_agent(tmp_path: Path) -> None:
    from tests.harness import free_port

    env = {**os.environ, "GOVERNOR_LISTEN": f"127.0.0.1:{free_port()}", "GOVERNOR_DATA_DIR": str(tmp_path),
           "GOVERNOR_LOCAL_KEY": LOCAL_KEY, "GOVERNOR_CONFIG": str(tmp_path / "none.toml"), "BROWSER": "true"}
    result = subprocess.run([sys.executable, "-m", "agent.cli", "open"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 3 and "not running" in result.stderr


# --- in a real browser -------------------------------------------------------------------


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def run_chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = chromium()
    assert binary is not None
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}"]
    return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=90)


@pytest.mark.skipif(chromium() is None, reason="headless Chromium not installed (Debian: apt-get install chromium)")
def test_page_in_headless_chromium(page_agent: AgentProcess, tmp_path: Path) -> None:
    # --dump-dom prints the DOM after load: the browser followed the 303 with the cookie it was given.
    dom = run_chromium(tmp_path, "--dump-dom", page_link(page_agent))
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Spend per day" in dom.stdout and "<rect" in dom.stdout and "claude-opus-preview" in dom.stdout
    assert "governor open" not in dom.stdout  # not the sign-in page
    shot = tmp_path / "spend-page.png"
    result = run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,1600", page_link(page_agent))
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1200, 1600)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20) or []
        assert len(colours) > 50  # a rendered page, not a blank or error screen
    if os.environ.get("GOVERNOR_UPDATE_DOCS"):
        shutil.copy(shot, REPO / "docs" / "spend-page.png")
