"""The real coding CLIs through `governor <tool>` against the real agent and the
loopback fake provider: the product is judged by these, not by our SDK tests.

Runs when Claude Code, Codex CLI and Gemini CLI are found on PATH or in
`GOVERNOR_TEST_CLIS_DIR` (`.ci/run` installs them there from npm); otherwise skips
and says so. Each gets a fresh HOME and is offline but for 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import launcher
from tests.fakes.providers import FakeProvider
from tests.harness import LOCAL_KEY, AgentProcess

CLIS_DIR = os.environ.get("GOVERNOR_TEST_CLIS_DIR", "")
SEARCH_PATH = os.pathsep.join(p for p in (CLIS_DIR, os.environ.get("PATH", "")) if p)


def cli(name: str) -> str:
    found = shutil.which(name, path=SEARCH_PATH)
    if found is None:
        pytest.skip(f"{name} is not installed (npm: see .ci/run; or set GOVERNOR_TEST_CLIS_DIR)")
    return found


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    with FakeProvider() as fake:
        yield fake


@pytest.fixture(scope="module")
def data_dir() -> Iterator[Path]:
    # Gemini CLI ignores settings below a directory other users can write to, so not under /tmp.
    base = Path.home() / ".cache" / "governor-tests"
    if launcher.shared_writable_ancestor(base / "x") is not None:
        pytest.skip("no private directory for the agent's data (the home directory is shared-writable)")
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = Path(tempfile.mkdtemp(dir=base))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def agent(provider: FakeProvider, data_dir: Path) -> Iterator[AgentProcess]:
    with AgentProcess(data_dir / "agent", upstream=provider.base_url) as running:
        yield running


def governor(agent: AgentProcess, tmp_path: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {
        **agent.env,
        "HOME": str(home),
        "PATH": SEARCH_PATH,
        "XDG_CONFIG_HOME": str(home / ".config"),
        # What real-clients.md found keeps each CLI off the network.
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "GEMINI_CLI_TRUST_WORKSPACE": "true",
        **extra_env,
    }
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args], env=env, cwd=tmp_path, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=120,
    )


def metered(provider: FakeProvider, dialect: str) -> list:
    return [ex for ex in provider.generate_exchanges() if ex.dialect == dialect]


def test_claude_code(agent: AgentProcess, provider: FakeProvider, tmp_path: Path) -> None:
    cli("claude")
    provider.clear()
    done = governor(agent, tmp_path, "claude", "-p", "say hi")
    assert done.returncode == 0, done.stderr
    assert "FAKE-OK [anthropic]" in done.stdout
    [call] = metered(provider, "anthropic")
    assert call.credential == "sk-upstream-anthropic" and LOCAL_KEY not in str(call.headers)
    assert call.path.startswith("/v1/messages")


def test_claude_code_tool_round_trip(agent: AgentProcess, provider: FakeProvider, tmp_path: Path) -> None:
    cli("claude")
    (tmp_path / "hello.txt").write_text("hello from the file\n")
    provider.clear()
    prompt = 'FAKE_TOOL Read {"file_path": "' + str(tmp_path / "hello.txt") + '"}'
    done = governor(agent, tmp_path, "claude", "-p", prompt)
    assert done.returncode == 0, done.stderr
    calls = metered(provider, "anthropic")
    assert len(calls) == 2  # the tool call, then the turn with its result
    assert "hello from the file" in str(calls[1].body["messages"])


def test_codex(agent: AgentProcess, provider: FakeProvider, tmp_path: Path) -> None:
    cli("codex")
    provider.clear()
    done = governor(agent, tmp_path, "codex", "exec", "--skip-git-repo-check", "say hi")
    assert done.returncode == 0, done.stderr
    assert "FAKE-OK [openai]" in done.stdout
    [call] = metered(provider, "openai_responses")
    assert call.body["stream"] is True and call.credential == "sk-upstream-openai"


def test_gemini_cli(agent: AgentProcess, provider: FakeProvider, tmp_path: Path) -> None:
    cli("gemini")
    provider.clear()
    done = governor(agent, tmp_path, "gemini", "-m", "gemini-2.5-flash", "-p", "say hi")
    assert done.returncode == 0, done.stderr
    assert "FAKE-OK [gemini]" in done.stdout
    [call] = metered(provider, "gemini")
    assert call.stream == "sse" and call.credential == "sk-upstream-gemini"
