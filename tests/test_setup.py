"""`governor setup <tool> [--undo]` on a temporary HOME: idempotent, and undo restores bytes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.harness import LOCAL_KEY, free_port


def run_setup(home: Path, tmp_path: Path, *args: str, shell: str = "/bin/bash") -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HOME": str(home),
        "SHELL": shell,
        "GOVERNOR_LISTEN": f"127.0.0.1:{PORT}",
        "GOVERNOR_DATA_DIR": str(tmp_path / "data"),
        "GOVERNOR_LOCAL_KEY": LOCAL_KEY,
        "GOVERNOR_CONFIG": str(tmp_path / "none.toml"),
    }
    env.pop("XDG_CONFIG_HOME", None)
    env.pop("CODEX_HOME", None)
    return subprocess.run([sys.executable, "-m", "agent.cli", "setup", *args], env=env, capture_output=True, text=True, timeout=30)


PORT = free_port()


def snapshot(home: Path) -> dict[str, bytes]:
    return {str(p.relative_to(home)): p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file()}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_bytes(b"# my rc\nalias ll='ls -l'")  # no trailing newline on purpose
    (home / ".codex").mkdir()
    (home / ".codex" / "config.toml").write_bytes(b'model = "gpt-5.5"\n\n[features]\nplugins = false\n')
    (home / ".gemini").mkdir()
    (home / ".gemini" / "settings.json").write_bytes(b'{"theme": "Dracula",\n "security": {"auth": {"selectedType": "oauth-personal"}}}')
    return home


@pytest.mark.parametrize("tool", ["claude", "codex", "gemini", "opencode", "aider"])
def test_setup_is_idempotent_and_undo_restores_bytes(tool: str, home: Path, tmp_path: Path) -> None:
    before = snapshot(home)
    first = run_setup(home, tmp_path, tool)
    assert first.returncode == 0, first.stderr
    after_first = snapshot(home)
    assert after_first != before
    second = run_setup(home, tmp_path, tool)
    assert second.returncode == 0 and "nothing to change" in second.stdout
    assert snapshot(home) == after_first
    bashrc = (home / ".bashrc").read_text()
    assert "# >>> governor " in bashrc and LOCAL_KEY not in bashrc  # the key is read at shell start
    undo = run_setup(home, tmp_path, tool, "--undo")
    assert undo.returncode == 0, undo.stderr
    assert snapshot(home) == before


def test_codex_config_gets_a_provider_and_profile(home: Path, tmp_path: Path) -> None:
    assert run_setup(home, tmp_path, "codex").returncode == 0
    config = tomllib.loads((home / ".codex" / "config.toml").read_text())
    assert config["profile"] == "governor"
    assert config["model"] == "gpt-5.5" and config["features"] == {"plugins": False}
    assert config["model_providers"]["governor"] == {
        "name": "Governor", "base_url": f"http://127.0.0.1:{PORT}/v1", "wire_api": "responses", "env_key": "GOVERNOR_LOCAL_KEY",
    }
    assert "export GOVERNOR_LOCAL_KEY=" in (home / ".bashrc").read_text()


def test_gemini_and_opencode_settings(home: Path, tmp_path: Path) -> None:
    assert run_setup(home, tmp_path, "gemini").returncode == 0
    settings = json.loads((home / ".gemini" / "settings.json").read_text())
    assert settings == {"theme": "Dracula", "security": {"auth": {"selectedType": "gemini-api-key"}}}
    assert run_setup(home, tmp_path, "opencode").returncode == 0
    opencode = json.loads((home / ".config" / "opencode" / "opencode.json").read_text())
    assert opencode["provider"]["google"]["options"] == {
        "baseURL": f"http://127.0.0.1:{PORT}/v1beta", "apiKey": "{env:GOVERNOR_LOCAL_KEY}",
    }


def test_undo_after_user_edits_removes_only_ours(home: Path, tmp_path: Path) -> None:
    assert run_setup(home, tmp_path, "gemini").returncode == 0
    path = home / ".gemini" / "settings.json"
    data = json.loads(path.read_text())
    data["theme"] = "GitHub"
    path.write_text(json.dumps(data))
    with (home / ".bashrc").open("a") as rc:
        rc.write("export EDITOR=vim\n")
    assert run_setup(home, tmp_path, "gemini", "--undo").returncode == 0
    assert json.loads(path.read_text()) == {"theme": "GitHub", "security": {"auth": {"selectedType": "oauth-personal"}}}
    rc_text = (home / ".bashrc").read_text()
    assert "governor" not in rc_text and rc_text.endswith("export EDITOR=vim\n") and rc_text.startswith("# my rc\n")


def test_zsh_and_fish_get_their_own_files(home: Path, tmp_path: Path) -> None:
    assert run_setup(home, tmp_path, "claude", shell="/usr/bin/zsh").returncode == 0
    assert "export ANTHROPIC_BASE_URL=" in (home / ".zshrc").read_text()
    assert run_setup(home, tmp_path, "aider", shell="/usr/bin/fish").returncode == 0
    assert "set -gx OPENAI_API_BASE" in (home / ".config" / "fish" / "conf.d" / "governor.fish").read_text()
    assert run_setup(home, tmp_path, "aider", "--undo", shell="/usr/bin/fish").returncode == 0
    assert not (home / ".config" / "fish" / "conf.d" / "governor.fish").exists()


def test_cursor_prints_what_to_paste(home: Path, tmp_path: Path) -> None:
    result = run_setup(home, tmp_path, "cursor")
    assert result.returncode == 0
    assert f"http://127.0.0.1:{PORT}/v1" in result.stdout and LOCAL_KEY in result.stdout
