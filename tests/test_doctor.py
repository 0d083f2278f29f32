"""`governor doctor`: checks in order, each failure with its fix, against a real agent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.harness import AgentProcess, free_port, governor


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory):
    with AgentProcess(tmp_path_factory.mktemp("status-agent")) as running:
        yield running



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


def down_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No agent on a free port: the checks that do not need one still run."""
    env = {**os.environ, "GOVERNOR_LISTEN": f"127.0.0.1:{free_port()}", "GOVERNOR_DATA_DIR": str(tmp_path / "data"),
           "GOVERNOR_LOCAL_KEY": "k", "GOVERNOR_CONFIG": str(tmp_path / "none.toml"), **extra}
    for provider in ("ANTHROPIC", "OPENAI", "GEMINI"):  # refused at once: no waiting on the internet
        env[f"GOVERNOR_{provider}_BASE_URL"] = f"http://127.0.0.1:{free_port()}"
    for name in ("GOVERNOR_CONTROL_PLANE_URL", "ANTHROPIC_BASE_URL", "GOOGLE_GEMINI_BASE_URL", "OPENAI_API_BASE"):
        env.pop(name, None)
    return env


def line_of(output: str, name: str) -> str:
    found = [chunk for chunk in output.split("\n") if name in chunk]
    assert found, f"no {name!r} line in:\n{output}"
    index = output.split("\n").index(found[0])
    rest = output.split("\n")[index + 1: index + 2]
    return "\n".join([found[0], *[r for r in rest if r.startswith("    fix:")]])


def test_doctor_checks_each_installed_tool(tmp_path: Path) -> None:
    home, bin_dir = tmp_path / "home", tmp_path / "bin"
    home.mkdir()
    bin_dir.mkdir()
    (home / ".bashrc").write_text("# mine\n")
    for tool in ("claude", "codex", "gemini"):  # stand-ins: doctor only needs them on PATH
        (bin_dir / tool).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / tool).chmod(0o755)
    env = down_env(tmp_path, HOME=str(home), SHELL="/bin/bash", PATH=f"{bin_dir}:/usr/bin:/bin")
    env.pop("XDG_CONFIG_HOME", None)
    env.pop("CODEX_HOME", None)
    assert governor(env, "setup", "claude").returncode == 0

    out = governor(env, "doctor").stdout
    assert line_of(out, "claude configuration").startswith("✓ claude configuration: points at the agent")
    codex = line_of(out, "codex configuration")
    assert codex.startswith("! codex configuration: not set up") and "fix: governor setup codex" in codex
    assert "opencode configuration" not in out and "aider configuration" not in out  # not installed

    # The shell still carries a provider URL: the tool would go around the agent.
    stale = governor({**env, "ANTHROPIC_BASE_URL": "https://api.anthropic.com"}, "doctor").stdout
    claude = line_of(stale, "claude configuration")
    assert claude.startswith("✗ claude configuration: set up, but this shell still has ANTHROPIC_BASE_URL")
    assert f"fix: source {home / '.bashrc'}" in claude

    # The agent moved to another port: the rc file no longer points at it.
    moved = governor({**env, "GOVERNOR_LISTEN": f"127.0.0.1:{free_port()}"}, "doctor").stdout
    claude = line_of(moved, "claude configuration")
    assert claude.startswith(f"✗ claude configuration: set up, but {home / '.bashrc'} no longer points at the agent")
    assert "fix: governor setup claude" in claude

    # Not set up, and the shell points the tool elsewhere: a failure, not a warning.
    gemini = line_of(governor({**env, "GOOGLE_GEMINI_BASE_URL": "https://example.test"}, "doctor").stdout, "gemini configuration")
    assert gemini.startswith("✗ gemini configuration: GOOGLE_GEMINI_BASE_URL=https://example.test") and "governor setup gemini" in gemini

    none = governor({**env, "PATH": "/nonexistent"}, "doctor").stdout
    assert "- coding tools: none of" in none


def test_doctor_checks_the_control_plane(tmp_path: Path) -> None:
    from tests.fakes.controlplane import FakeControlPlane

    env = down_env(tmp_path)
    assert "- control plane: standalone" in governor(env, "doctor").stdout
    with FakeControlPlane() as cp:
        configured = {**env, "GOVERNOR_CONTROL_PLANE_URL": cp.url}
        out = line_of(governor(configured, "doctor").stdout, "control plane")
        assert out.startswith(f"✗ control plane: {cp.url} is configured, but this laptop is not logged in") and "fix: governor login" in out

        cp.configure(approve_after=1)
        done = governor(env, "login", "--control-plane", cp.url, "--no-browser")
        assert done.returncode == 0, done.stderr
        out = line_of(governor(env, "doctor").stdout, "control plane")  # the URL login used
        assert out.startswith(f"✓ control plane: {cp.url} reachable; logged in as")

        cp.revoke()
        out = line_of(governor(env, "doctor").stdout, "control plane")
        assert out.startswith("✗ control plane:") and "refused this laptop's key (virtual_key_revoked)" in out
        assert "fix: governor login" in out
        cp.down()
        out = line_of(governor(env, "doctor").stdout, "control plane")
        assert out.startswith(f"✗ control plane: {cp.url} unreachable") and "fix: check the network" in out
