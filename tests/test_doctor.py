"""`governor doctor`: checks in order, each failure with its fix, against a real agent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import AgentProcess, free_port


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory):
    with AgentProcess(tmp_path_factory.mktemp("status-agent")) as running:
        yield running


def governor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], env=env, capture_output=True, text=True, timeout=60)


def test_doctor_with_a_running_agent(agent: AgentProcess) -> None:
    env = {**agent.env, "GOVERNOR_ANTHROPIC_BASE_URL": agent.base_url, "GOVERNOR_OPENAI_BASE_URL": agent.base_url,
           "GOVERNOR_GEMINI_BASE_URL": agent.base_url}
    result = governor(env, "doctor")
    lines = result.stdout
    assert "✓ config" in lines and "✓ agent running" in lines and "✓ port" in lines and "✓ local key" in lines
    assert "✓ anthropic upstream" in lines
    # The harness sets no provider keys: every credential missing is a failure with its fix.
    assert "✗ anthropic credential" in lines and "governor secret set anthropic_api_key" in lines
    assert result.returncode == 1
    order = [line.split(":")[0][2:] for line in lines.splitlines() if line[:2] in ("✓ ", "✗ ", "! ", "- ")]
    assert order.index("config") < order.index("agent running") < order.index("port") < order.index("local key")


def test_doctor_agent_down_and_loose_modes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    (data / "secrets.json").write_text("{}")
    os.chmod(data, 0o755)
    os.chmod(data / "secrets.json", 0o644)
    env = {**os.environ, "GOVERNOR_LISTEN": f"127.0.0.1:{free_port()}", "GOVERNOR_DATA_DIR": str(data),
           "GOVERNOR_LOCAL_KEY": "k", "GOVERNOR_CONFIG": str(tmp_path / "none.toml"),
           "GOVERNOR_ANTHROPIC_BASE_URL": f"http://127.0.0.1:{free_port()}"}
    result = governor(env, "doctor")
    assert result.returncode == 1
    assert "✗ agent running" in result.stdout and "governor run" in result.stdout
    assert "✓ port" in result.stdout  # free for the agent
    assert "✗ anthropic upstream" in result.stdout
    assert "✗ data dir" in result.stdout and "chmod 700" in result.stdout and "chmod 600" in result.stdout


def test_doctor_reports_invalid_config(tmp_path: Path) -> None:
    env = {**os.environ, "GOVERNOR_LISTEN": "0.0.0.0:8787", "GOVERNOR_DATA_DIR": str(tmp_path),
           "GOVERNOR_CONFIG": str(tmp_path / "none.toml")}
    result = governor(env, "doctor")
    assert result.returncode == 1
    assert result.stdout.startswith("✗ config")
