"""`governor status` and `governor doctor` against a real agent."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agent import statusview
from tests.harness import AgentProcess, free_port, governor


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory):
    with AgentProcess(tmp_path_factory.mktemp("status-agent")) as running:
        yield running



def test_status_json_is_the_agents(agent: AgentProcess) -> None:
    result = governor(agent.env, "status", "--json")
    status = json.loads(result.stdout)
    assert status["listen"] == f"127.0.0.1:{agent.port}"
    assert result.returncode == {"governed": 0, "warning": 1, "blocked": 2}[statusview.health(status).value]


def test_status_text_summarises(agent: AgentProcess) -> None:
    result = governor(agent.env, "status")
    assert result.stdout.startswith("Governor: governed")
    assert f"127.0.0.1:{agent.port}" in result.stdout
    assert "Providers:" in result.stdout


def test_status_exit_3_when_agent_down(tmp_path: Path) -> None:
    env = {**os.environ, "GOVERNOR_LISTEN": f"127.0.0.1:{free_port()}", "GOVERNOR_DATA_DIR": str(tmp_path),
           "GOVERNOR_LOCAL_KEY": "k", "GOVERNOR_CONFIG": str(tmp_path / "none.toml")}
    result = governor(env, "status")
    assert result.returncode == 3
    assert "not running" in result.stderr and "governor run" in result.stderr
    assert json.loads(governor(env, "status", "--json").stdout)["state"] == "not running"


def test_status_text_with_governance_fields() -> None:
    status = {
        "version": "1", "uptime_s": 3600, "listen": "127.0.0.1:8787", "state": "running", "inflight": 0,
        "providers": {"anthropic": {"credential": "configured"}},
        "budgets": [{"id": "m", "scope": "user", "window": "month", "limit_usd": 200, "spent_usd": 170, "pct": 85,
                     "remaining_usd": 30, "resets_at": 1798761600, "on_breach": "block"}],
        "today": {"requests": 3, "cost_usd": 0.42, "tokens": 1234,
                  "by_model": {"claude-opus-4-8": {"cost_usd": 0.4, "requests": 2}, "gpt-5.5": 0.02},
                  "by_client": {"claude-code": {"cost_usd": 0.4, "requests": 2}}},
        "last_refusal": {"at": 1798761000, "code": "policy_denied", "message": "model not allowed", "client": "codex"},
        "bundle": {"source": "file", "revision": "r7", "age_s": 90, "stale": False},
    }
    text = statusview.render_text(status)
    assert text.splitlines()[0].startswith("Governor: governed, with warnings")
    assert "85.0%  user budget m: $170.00 of $200.00 · month · resets" in text
    assert "Today: 3 calls · $0.42 · 1,234 tokens" in text
    assert "by model: claude-opus-4-8 $0.40 (2), gpt-5.5 $0.02" in text
    assert "model not allowed" in text and "Policy bundle r7 from file, 90s old" in text

    status["refusals"] = [
        {"at": 1798761000, "code": "budget_exceeded", "message": "the principal limit is spent", "client": "claude-code"},
        status["last_refusal"],
    ]
    text = statusview.render_text(status)
    listed = text.split("Last refusals:\n", 1)[1].splitlines()[:2]
    assert "the principal limit is spent" in listed[0] and "model not allowed" in listed[1]


def test_status_shows_managed_keys_and_their_source(tmp_path: Path) -> None:
    managed = tmp_path / "managed"
    managed.mkdir()
    (managed / "managed.toml").write_text('log_level = "DEBUG"\ndrain_timeout_s = 20.0\n')
    env = {"GOVERNOR_MANAGED_PLATFORM": "linux", "GOVERNOR_MANAGED_DIR": str(managed)}
    with AgentProcess(tmp_path / "agent", env=env) as running:
        result = governor(running.env, "status")
    assert result.returncode in (0, 1), result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("Managed: "))
    assert "drain_timeout_s (from" in line and "log_level (from" in line and "managed.toml" in line
