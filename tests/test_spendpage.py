"""The local spend page: a pure render of status + calls, and `governor open` against a real agent."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from agent import spendpage
from tests.harness import AgentProcess

STATUS = {
    "version": "1", "listen": "127.0.0.1:8787", "state": "running", "governed": True,
    "budgets": [{"id": "m", "scope": "user", "window": "month", "limit_usd": 200, "spent_usd": 42.1, "pct": 21.05,
                 "remaining_usd": 157.9, "resets_at": 1798761600, "on_breach": "block"}],
    "today": {"requests": 2, "cost_usd": 0.5, "by_model": {"claude-<b>": {"cost_usd": 0.5, "requests": 2}}, "by_client": {}},
    "last_refusal": {"at": 1798761000, "code": "policy_denied", "message": "tool <script> denied"},
    "control_plane": {"url": "https://cp", "connected": True, "dashboard_url": "https://cp/dash"},
}
CALLS = [{"started_at": 1798761000, "status": 403, "client": "codex", "model": "gpt-5.5",
          "usage": {"input_tokens": 10, "output_tokens": 5}, "duration_ms": 12.3, "error": "policy_denied"}]


def test_render_is_self_contained_and_escaped() -> None:
    page = spendpage.render(STATUS, CALLS, now=1798761600)
    assert page.startswith("<!doctype html>")
    assert "<script" not in page and "http://" not in page.replace("127.0.0.1:8787", "")  # no script, no CDN
    assert "tool &lt;script&gt; denied" in page and "claude-&lt;b&gt;" in page
    assert "$42.10 of $200.00 · month" in page and "21.1%" in page
    assert 'class=refused' in page and "policy_denied" in page
    assert 'href="https://cp/dash"' in page
    assert spendpage.render(STATUS, CALLS, now=1798761600) == page  # pure


def test_governor_open_writes_a_private_page(tmp_path: Path) -> None:
    with AgentProcess(tmp_path / "agent") as agent:
        env = {**agent.env, "BROWSER": "true"}  # webbrowser runs `true` instead of a browser
        result = subprocess.run([sys.executable, "-m", "agent.cli", "open"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    page = Path(result.stdout.strip())
    assert page.parent == agent.data_dir
    assert stat.S_IMODE(os.stat(page).st_mode) == 0o600
    assert "Governor spend" in page.read_text()
