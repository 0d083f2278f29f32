"""`governor <tool>`: each wrapper execs a stand-in tool on PATH that records
its argv, environment and stdin, against a real agent."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agent import launcher, wrappers
from tests.harness import LOCAL_KEY, AgentProcess, free_port

FAKE_TOOL = r"""#!/bin/sh
out="$FAKE_OUT/$(basename "$0")"
printf '%s\0' "$@" > "$out.argv"
env -0 > "$out.env"
if [ -n "$GEMINI_CLI_SYSTEM_SETTINGS_PATH" ]; then cat "$GEMINI_CLI_SYSTEM_SETTINGS_PATH" > "$out.gemini-settings"; fi
if [ -n "$FAKE_WAIT_SIGNAL" ]; then
  trap 'echo TERM > "$out.signal"; exit 143' TERM
  echo $$ > "$out.ready"
  while :; do sleep 0.05; done
fi
cat > "$out.stdin"
exit "${FAKE_EXIT:-0}"
"""


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory):
    with AgentProcess(tmp_path_factory.mktemp("agent")) as running:
        yield running


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in wrappers.TOOLS:
        path = bin_dir / tool
        path.write_text(FAKE_TOOL)
        path.chmod(0o755)
    (tmp_path / "out").mkdir()
    (tmp_path / "home").mkdir()
    return bin_dir


def wrapper_env(agent_env: dict[str, str], fake_bin: Path, **extra: str) -> dict[str, str]:
    env = dict(agent_env)
    env["PATH"] = f"{fake_bin}{os.pathsep}{env['PATH']}"
    env["FAKE_OUT"] = str(fake_bin.parent / "out")
    env["HOME"] = str(fake_bin.parent / "home")
    env.update(extra)
    return env


def run_wrapper(tool: str, args: list[str], env: dict[str, str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", tool, *args], env=env, input=stdin, capture_output=True, timeout=60
    )


def recorded(fake_bin: Path, tool: str) -> tuple[list[str], dict[str, str], bytes]:
    out = fake_bin.parent / "out" / tool
    argv = out.with_suffix(".argv").read_bytes().split(b"\0")[:-1]
    env = dict(item.split("=", 1) for item in out.with_suffix(".env").read_bytes().decode().split("\0") if "=" in item)
    return [a.decode() for a in argv], env, out.with_suffix(".stdin").read_bytes()


def test_claude_gets_base_url_and_token_and_loses_api_key(agent: AgentProcess, fake_bin: Path) -> None:
    env = wrapper_env(agent.env, fake_bin, ANTHROPIC_API_KEY="sk-ant-personal", FAKE_EXIT="7")
    result = run_wrapper("claude", ["-p", "say hi", "--output-format", "json"], env, stdin=b"piped input\n")
    assert result.returncode == 7, result.stderr
    argv, tool_env, stdin = recorded(fake_bin, "claude")
    assert argv == ["-p", "say hi", "--output-format", "json"]
    assert tool_env["ANTHROPIC_BASE_URL"] == agent.base_url
    assert tool_env["ANTHROPIC_AUTH_TOKEN"] == LOCAL_KEY
    assert "ANTHROPIC_API_KEY" not in tool_env
    assert stdin == b"piped input\n"


def test_help_flags_belong_to_the_tool(agent: AgentProcess, fake_bin: Path) -> None:
    result = run_wrapper("claude", ["--help"], wrapper_env(agent.env, fake_bin))
    assert result.returncode == 0, result.stderr
    assert recorded(fake_bin, "claude")[0] == ["--help"]


def test_codex_gets_a_responses_provider_as_overrides(agent: AgentProcess, fake_bin: Path) -> None:
    result = run_wrapper("codex", ["exec", "--skip-git-repo-check", "say hi"], wrapper_env(agent.env, fake_bin))
    assert result.returncode == 0, result.stderr
    argv, tool_env, _ = recorded(fake_bin, "codex")
    overrides = dict(pair.split("=", 1) for flag, pair in zip(argv[0:10:2], argv[1:10:2], strict=False) if flag == "-c")
    assert overrides == {
        "model_provider": '"governor"',
        "model_providers.governor.name": '"Governor"',
        "model_providers.governor.base_url": f'"{agent.base_url}/v1"',
        "model_providers.governor.wire_api": '"responses"',
        "model_providers.governor.env_key": '"GOVERNOR_LOCAL_KEY"',
    }
    assert argv[10:] == ["exec", "--skip-git-repo-check", "say hi"]
    assert tool_env["GOVERNOR_LOCAL_KEY"] == LOCAL_KEY
    assert not (fake_bin.parent / "home" / ".codex").exists()


@pytest.fixture
def private_data_dir() -> Iterator[Path]:
    """A data dir no other user can write above: Gemini CLI ignores system settings elsewhere.

    pytest's tmp dirs live under the world-writable /tmp, so this one is made in
    the real home's cache (removed afterwards); a machine whose home is shared-writable skips.
    """
    base = Path.home() / ".cache" / "governor-tests"
    if launcher.shared_writable_ancestor(base / "x") is not None:
        pytest.skip(f"no private directory for Gemini CLI's settings: {launcher.shared_writable_ancestor(base / 'x')} is shared-writable")
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = Path(tempfile.mkdtemp(dir=base))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_gemini_refuses_a_data_dir_other_users_can_write_above(agent: AgentProcess, fake_bin: Path) -> None:
    assert launcher.shared_writable_ancestor(agent.data_dir / "run" / "x") is not None  # pytest's /tmp
    result = run_wrapper("gemini", ["-p", "say hi"], wrapper_env(agent.env, fake_bin))
    assert result.returncode == launcher.EXIT_UNSAFE_DIR
    assert b"writable by other users" in result.stderr and b"GOVERNOR_DATA_DIR" in result.stderr
    assert not (fake_bin.parent / "out" / "gemini.argv").exists()  # never launched un-governed


def test_gemini_gets_api_key_auth_without_touching_home(
    agent: AgentProcess, fake_bin: Path, tmp_path: Path, private_data_dir: Path
) -> None:
    org = tmp_path / "org-settings.json"
    org.write_text(json.dumps({"telemetry": {"enabled": False}, "security": {"auth": {"selectedType": "oauth-personal"}}}))
    env = wrapper_env(agent.env, fake_bin, GOOGLE_API_KEY="personal", GEMINI_CLI_SYSTEM_SETTINGS_PATH=str(org),
                      GOVERNOR_DATA_DIR=str(private_data_dir))
    result = run_wrapper("gemini", ["-m", "gemini-2.5-flash", "-p", "say hi"], env)
    assert result.returncode == 0, result.stderr
    argv, tool_env, _ = recorded(fake_bin, "gemini")
    assert argv == ["-m", "gemini-2.5-flash", "-p", "say hi"]
    assert tool_env["GOOGLE_GEMINI_BASE_URL"] == agent.base_url
    assert tool_env["GEMINI_API_KEY"] == LOCAL_KEY
    assert "GOOGLE_API_KEY" not in tool_env
    settings = json.loads((fake_bin.parent / "out" / "gemini.gemini-settings").read_text())
    assert settings == {"security": {"auth": {"selectedType": "gemini-api-key"}}, "telemetry": {"enabled": False}}
    assert Path(tool_env["GEMINI_CLI_SYSTEM_SETTINGS_PATH"]).parent == private_data_dir / "run"
    assert not (fake_bin.parent / "home" / ".gemini").exists()


def test_opencode_gets_provider_overrides_merged_over_its_own(agent: AgentProcess, fake_bin: Path) -> None:
    env = wrapper_env(agent.env, fake_bin, OPENCODE_CONFIG_CONTENT='{"autoupdate": false}')
    assert run_wrapper("opencode", ["run", "say hi"], env).returncode == 0
    _, tool_env, _ = recorded(fake_bin, "opencode")
    config = json.loads(tool_env["OPENCODE_CONFIG_CONTENT"])
    assert config["autoupdate"] is False
    assert config["provider"]["anthropic"]["options"] == {"baseURL": agent.base_url + "/v1", "apiKey": LOCAL_KEY}
    assert config["provider"]["openai"]["options"]["baseURL"] == agent.base_url + "/v1"
    assert config["provider"]["google"]["options"]["baseURL"] == agent.base_url + "/v1beta"


def test_aider_gets_openai_base_and_key(agent: AgentProcess, fake_bin: Path) -> None:
    env = wrapper_env(agent.env, fake_bin, OPENAI_BASE_URL="https://api.openai.com/v1")
    assert run_wrapper("aider", ["--model", "openai/gpt-5", "--message", "hi"], env).returncode == 0
    argv, tool_env, _ = recorded(fake_bin, "aider")
    assert argv == ["--model", "openai/gpt-5", "--message", "hi"]
    assert tool_env["OPENAI_API_BASE"] == tool_env["OPENAI_BASE_URL"] == agent.base_url + "/v1"
    assert tool_env["OPENAI_API_KEY"] == LOCAL_KEY


def test_cursor_prints_the_in_app_settings_and_opens_it(agent: AgentProcess, fake_bin: Path) -> None:
    result = run_wrapper("cursor", ["."], wrapper_env(agent.env, fake_bin))
    assert result.returncode == 0
    assert f"{agent.base_url}/v1" in result.stderr.decode() and LOCAL_KEY in result.stderr.decode()
    assert recorded(fake_bin, "cursor")[0] == ["."]


def test_missing_tool_is_reported_with_127(agent: AgentProcess, fake_bin: Path) -> None:
    (fake_bin / "aider").unlink()
    env = wrapper_env(agent.env, fake_bin, PATH=str(fake_bin))
    result = run_wrapper("aider", [], env)
    assert result.returncode == 127
    assert b"`aider` is not on PATH" in result.stderr


def test_signals_reach_the_tool(agent: AgentProcess, fake_bin: Path) -> None:
    env = wrapper_env(agent.env, fake_bin, FAKE_WAIT_SIGNAL="1")
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "claude"], env=env, stdin=subprocess.DEVNULL)
    ready = fake_bin.parent / "out" / "claude.ready"
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists()
    assert int(ready.read_text()) == proc.pid  # exec: the wrapper became the tool
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 143
    assert (fake_bin.parent / "out" / "claude.signal").read_text().strip() == "TERM"


def test_agent_down_is_started_in_the_background_first(tmp_path: Path, fake_bin: Path) -> None:
    agent = AgentProcess(tmp_path / "autostart")  # configured, never started by the test
    agent.data_dir.mkdir(parents=True)
    try:
        result = run_wrapper("claude", ["-p", "hi"], wrapper_env(agent.env, fake_bin))
        assert result.returncode == 0, result.stderr
        assert b"starting the agent in the background" in result.stderr
        _, tool_env, _ = recorded(fake_bin, "claude")
        assert tool_env["ANTHROPIC_BASE_URL"] == agent.base_url
    finally:
        pid_file = agent.data_dir / "agent.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text())
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)


def test_agent_that_cannot_start_means_no_tool(tmp_path: Path, fake_bin: Path) -> None:
    env = wrapper_env(
        {**os.environ, "GOVERNOR_LISTEN": f"127.0.0.1:{free_port()}", "GOVERNOR_DATA_DIR": str(tmp_path / "d"),
         "GOVERNOR_LOCAL_KEY": LOCAL_KEY, "GOVERNOR_CONFIG": str(tmp_path / "none.toml"),
         "GOVERNOR_BODY_LIMIT_BYTES": "not-a-number-for-the-daemon-only"},
        fake_bin,
    )
    result = run_wrapper("claude", [], env)
    assert result.returncode != 0
    assert not (fake_bin.parent / "out" / "claude.argv").exists()


class _StatusAgent(BaseHTTPRequestHandler):
    """Stands in for an agent whose governance reports an exhausted `block` budget."""

    status: dict = {}

    def do_GET(self) -> None:
        body = json.dumps(self.status if self.path == "/_governor/v1/status" else {"status": "ok"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_exhausted_block_budget_stops_the_launch(tmp_path: Path, fake_bin: Path) -> None:
    _StatusAgent.status = {
        "version": "test", "state": "running", "listen": "", "uptime_s": 1, "inflight": 0, "providers": {},
        "budgets": [
            {"id": "team-month", "scope": "team", "window": "month", "limit_usd": 200, "spent_usd": 200.4,
             "reserved_usd": 0, "remaining_usd": 0, "pct": 100.2, "resets_at": 1798761600, "on_breach": "block"},
            {"id": "soft", "scope": "user", "window": "day", "limit_usd": 5, "spent_usd": 9,
             "remaining_usd": -4, "pct": 180, "resets_at": 1798761600, "on_breach": "warn"},
        ],
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StatusAgent)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = wrapper_env(
            {**os.environ, "GOVERNOR_LISTEN": f"127.0.0.1:{server.server_address[1]}",
             "GOVERNOR_DATA_DIR": str(tmp_path / "d"), "GOVERNOR_LOCAL_KEY": LOCAL_KEY,
             "GOVERNOR_CONFIG": str(tmp_path / "none.toml")},
            fake_bin,
        )
        result = run_wrapper("claude", ["-p", "hi"], env)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 2
    message = result.stderr.decode()
    assert "team budget team-month is used up" in message and "resets" in message
    assert "soft" not in message  # a warn budget never blocks
    assert not (fake_bin.parent / "out" / "claude.argv").exists()


def test_blocking_budgets_reads_remaining_or_pct() -> None:
    status = {"budgets": [
        {"id": "a", "on_breach": "block", "remaining_usd": 0.0},
        {"id": "b", "on_breach": "block", "pct": 100},
        {"id": "c", "on_breach": "block", "remaining_usd": 1.0, "pct": 99},
        {"id": "d", "on_breach": "warn", "remaining_usd": -1},
    ]}
    assert [b["id"] for b in wrappers.blocking_budgets(status)] == ["a", "b"]
    assert wrappers.blocking_budgets({}) == []
