"""Managed settings: each OS reader against real files (TOML, plists written
with plistlib, a recorded `reg export`), the managed layer on top of config,
and the real agent obeying a managed listen address."""

from __future__ import annotations

import logging
import os
import plistlib
import subprocess
import sys
import tomllib
import types
import typing
from pathlib import Path

import httpx
import pytest

from agent import managed
from agent.config import UNMANAGEABLE_FIELDS, Settings, load_settings
from tests.harness import AgentProcess, free_port

REPO = Path(__file__).resolve().parents[1]
REG_EXAMPLE = REPO / "installers" / "windows" / "governor-policy-example.reg"


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No GOVERNOR_* from the outside; an empty config file and managed dir."""
    for name in list(os.environ):
        if name.startswith("GOVERNOR_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("GOVERNOR_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("GOVERNOR_MANAGED_DIR", str(tmp_path / "etc"))
    return tmp_path


# ---------------------------------------------------------------- Linux


def test_linux_reads_managed_toml_then_drop_ins_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "managed.d").mkdir(parents=True)
    (tmp_path / "managed.toml").write_text('log_level = "WARNING"\nlisten = "127.0.0.1:9001"\n')
    (tmp_path / "managed.d" / "50-org.toml").write_text('listen = "127.0.0.1:9050"\n')
    (tmp_path / "managed.d" / "10-base.toml").write_text('listen = "127.0.0.1:9010"\noutbox_max_mb = 64\n')
    (tmp_path / "managed.d" / "README").write_text("not toml, not read")

    got = managed.read_linux(tmp_path)

    assert got.values == {"log_level": "WARNING", "listen": "127.0.0.1:9050", "outbox_max_mb": 64}
    assert got.sources["listen"] == str(tmp_path / "managed.d" / "50-org.toml")
    assert got.sources["outbox_max_mb"] == str(tmp_path / "managed.d" / "10-base.toml")
    assert got.sources["log_level"] == str(tmp_path / "managed.toml")


def test_linux_broken_file_is_reported_and_the_others_still_apply(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "managed.d").mkdir(parents=True)
    (tmp_path / "managed.toml").write_text("listen = [unclosed\n")
    (tmp_path / "managed.d" / "20.toml").write_text("intercept_enabled = true\n")
    with caplog.at_level(logging.ERROR, "governor.managed"):
        got = managed.read_linux(tmp_path)
    assert got.values == {"intercept_enabled": True}
    assert "managed_file_unreadable" in caplog.text and "managed.toml" in caplog.text


def test_linux_without_any_file_manages_nothing(tmp_path: Path) -> None:
    assert managed.read_linux(tmp_path / "absent").values == {}


# ---------------------------------------------------------------- macOS


def test_macos_user_profile_on_top_of_device_profile(tmp_path: Path) -> None:
    device = {"control_plane_url": "https://cp.example.com", "log_level": "INFO", "PayloadUUID": "X", "allowed_wrappers": ["claude"]}
    (tmp_path / f"{managed.BUNDLE_ID}.plist").write_bytes(plistlib.dumps(device))  # XML, as profiles install
    (tmp_path / "alice").mkdir()
    user = {"log_level": "DEBUG", "intercept_enabled": True, "outbox_max_mb": 32}
    (tmp_path / "alice" / f"{managed.BUNDLE_ID}.plist").write_bytes(plistlib.dumps(user, fmt=plistlib.FMT_BINARY))
    (tmp_path / "bob").mkdir()
    (tmp_path / "bob" / f"{managed.BUNDLE_ID}.plist").write_bytes(plistlib.dumps({"log_level": "ERROR"}))

    got = managed.read_macos(tmp_path, user="alice")

    assert got.values == {
        "control_plane_url": "https://cp.example.com",
        "log_level": "DEBUG",
        "allowed_wrappers": ["claude"],
        "intercept_enabled": True,
        "outbox_max_mb": 32,
    }
    assert got.sources["log_level"] == str(tmp_path / "alice" / f"{managed.BUNDLE_ID}.plist")
    assert got.sources["control_plane_url"] == str(tmp_path / f"{managed.BUNDLE_ID}.plist")


def test_macos_corrupt_plist_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / f"{managed.BUNDLE_ID}.plist").write_bytes(b"<plist><dict><key>x</key>")
    with caplog.at_level(logging.ERROR, "governor.managed"):
        assert managed.read_macos(tmp_path, user="nobody").values == {}
    assert "managed_file_unreadable" in caplog.text


def test_mobileconfig_template_payload_read_as_managed_preferences(tmp_path: Path) -> None:
    """What macOS writes from our profile template is what the agent reads."""
    profile = plistlib.loads((REPO / "installers/macos/governor.mobileconfig").read_bytes())
    payload = profile["PayloadContent"][0]
    assert payload["PayloadType"] == managed.BUNDLE_ID
    (tmp_path / f"{managed.BUNDLE_ID}.plist").write_bytes(plistlib.dumps(payload))
    got = managed.read_macos(tmp_path, user="nobody")
    assert got.values == {"control_plane_url": "https://langwatch.example.com", "enrollment_org": "example-corp"}


# ---------------------------------------------------------------- Windows


def test_windows_recorded_policy_hklm_wins_over_hkcu() -> None:
    """The example policy, UTF-16 with BOM as `reg export` writes it."""
    assert REG_EXAMPLE.read_bytes()[:2] == b"\xff\xfe"
    got = managed.read_windows(managed.RecordedRegistry.from_reg_file(REG_EXAMPLE))
    hklm = f"HKEY_LOCAL_MACHINE\\{managed.POLICY_KEY}"
    hkcu = f"HKEY_CURRENT_USER\\{managed.POLICY_KEY}"
    assert got.values == {
        "control_plane_url": "https://langwatch.example.com",
        "enrollment_org": "example-corp",
        "intercept_enabled": 1,
        "outbox_max_mb": 128,
        "allowed_wrappers": ["claude", "codex"],
        "log_level": "DEBUG",
    }
    assert got.sources["enrollment_org"] == hklm
    assert got.sources["log_level"] == hkcu


def test_reg_parser_value_kinds_and_continuation_lines() -> None:
    text = (
        "Windows Registry Editor Version 5.00\r\n\r\n"
        "[HKEY_CURRENT_USER\\SOFTWARE\\Policies\\Governor\\Governor]\r\n"
        '"quoted"="C:\\\\Program Files\\\\x \\"y\\""\r\n'
        '"q"=hex(b):00,01,00,00,00,00,00,00\r\n'
        '"exp"=hex(2):25,00,41,00,25,00,00,00\r\n'
        '"multi"=hex(7):61,00,00,00,62,00,\\\r\n  00,00,00,00\r\n'
        '"bin"=hex:01,02\r\n'
        '"gone"=-\r\n'
        "[-HKEY_CURRENT_USER\\SOFTWARE\\Deleted]\r\n"
        '"ignored"="x"\r\n'
    ).encode("utf-16")
    keys = managed.parse_reg(text)
    assert keys == {
        ("HKEY_CURRENT_USER", "SOFTWARE\\Policies\\Governor\\Governor"): {
            "quoted": 'C:\\Program Files\\x "y"',
            "q": 256,
            "exp": "%A%",
            "multi": ["a", "b"],
        }
    }


def test_windows_missing_key_manages_nothing() -> None:
    assert managed.read_windows(managed.RecordedRegistry({})).values == {}


# ---------------------------------------------------------------- the managed layer in Settings


def test_managed_wins_and_locks_every_lower_layer(isolated: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    (isolated / "etc").mkdir()
    (isolated / "etc" / "managed.toml").write_text(
        'listen = "127.0.0.1:9999"\nlog_level = "ERROR"\nallowed_wrappers = "claude, codex"\nintercept_enabled = true\n'
    )
    (isolated / "config.toml").write_text('log_level = "DEBUG"\nupstream_timeout_s = 5.0\n')
    monkeypatch.setenv("GOVERNOR_LISTEN", "127.0.0.1:1234")

    with caplog.at_level(logging.WARNING, "governor.config"):
        settings = load_settings(intercept_enabled=False)

    assert settings.listen == "127.0.0.1:9999"
    assert settings.log_level == "ERROR"
    assert settings.allowed_wrappers == ["claude", "codex"]  # a comma string becomes the list
    assert settings.intercept_enabled is True
    assert settings.upstream_timeout_s == 5.0  # not managed: the user's file still applies
    source = str(isolated / "etc" / "managed.toml")
    assert settings.managed_keys() == {k: source for k in ("listen", "log_level", "allowed_wrappers", "intercept_enabled")}
    assert "managed_key_locked key=listen ignored=env" in caplog.text
    assert "managed_key_locked key=log_level ignored=config_file" in caplog.text
    assert "managed_key_locked key=intercept_enabled ignored=init" in caplog.text
    assert "upstream_timeout_s" not in caplog.text


def test_nothing_managed_changes_nothing(isolated: Path) -> None:
    settings = load_settings()
    assert settings.managed_keys() == {}
    assert settings.listen == "127.0.0.1:8787"
    assert settings.allowed_wrappers is None and settings.allow_setup is True and settings.outbox_max_mb == 256


def test_secrets_and_unknown_keys_are_refused(isolated: Path, caplog: pytest.LogCaptureFixture) -> None:
    (isolated / "etc").mkdir()
    (isolated / "etc" / "managed.toml").write_text(
        'anthropic_api_key = "sk-leak"\ndata_dir = "/shared"\ncontrol_plan_url = "typo"\noutbox_max_mb = 8\n'
        'resolve = "not manageable"\n'
    )
    with caplog.at_level(logging.WARNING):
        settings = load_settings()
    assert settings.anthropic_api_key is None
    assert settings.data_dir != Path("/shared")
    assert settings.managed_keys() == {"outbox_max_mb": str(isolated / "etc" / "managed.toml")}
    assert "managed_secret_ignored key=anthropic_api_key" in caplog.text
    assert "managed_secret_ignored key=data_dir" in caplog.text
    assert "managed_key_unknown key=control_plan_url" in caplog.text
    assert "managed_key_unknown key=resolve" in caplog.text
    assert "sk-leak" not in caplog.text


def test_invalid_managed_value_fails_loudly(isolated: Path) -> None:
    (isolated / "etc").mkdir()
    (isolated / "etc" / "managed.toml").write_text('listen = "0.0.0.0:8787"\n')
    with pytest.raises(ValueError, match="refusing to listen on 0.0.0.0"):
        load_settings()


def test_platform_override_reads_macos_and_windows_sources(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prefs = isolated / "prefs"
    prefs.mkdir()
    (prefs / f"{managed.BUNDLE_ID}.plist").write_bytes(plistlib.dumps({"outbox_max_mb": 12, "allow_setup": False}))
    monkeypatch.setenv("GOVERNOR_MANAGED_PLATFORM", "darwin")
    monkeypatch.setenv("GOVERNOR_MANAGED_PREFS_DIR", str(prefs))
    mac = load_settings()
    assert (mac.outbox_max_mb, mac.allow_setup) == (12, False)
    assert mac.managed_keys()["allow_setup"] == str(prefs / f"{managed.BUNDLE_ID}.plist")

    monkeypatch.setenv("GOVERNOR_MANAGED_PLATFORM", "win32")
    monkeypatch.setenv("GOVERNOR_MANAGED_REG_FILE", str(REG_EXAMPLE))
    win = load_settings()
    assert win.intercept_enabled is True  # REG_DWORD 1
    assert win.allowed_wrappers == ["claude", "codex"]  # REG_MULTI_SZ
    assert win.control_plane_url == "https://langwatch.example.com"
    assert win.log_level == "DEBUG"
    assert win.managed_keys()["outbox_max_mb"].startswith("HKEY_LOCAL_MACHINE\\SOFTWARE\\Policies\\Governor\\Governor")


# ---------------------------------------------------------------- the catalogue and templates


def _kind(annotation: object) -> str:
    base = annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        base = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(base) is list:
        return "list"
    return {bool: "bool", int: "int", float: "float", str: "string", Path: "string"}[base]  # type: ignore[index]


def test_catalogue_documents_every_manageable_setting_with_its_type() -> None:
    catalogue = tomllib.loads((REPO / "installers/managed-keys.toml").read_text())
    assert set(catalogue) == managed.MANAGED_KEYS, (
        "agent/managed.py MANAGED_KEYS and installers/managed-keys.toml must list the same keys "
        "(then run installers/gen_managed.py)"
    )
    assert managed.MANAGED_KEYS <= set(Settings.model_fields), sorted(managed.MANAGED_KEYS - set(Settings.model_fields))
    assert not managed.MANAGED_KEYS & UNMANAGEABLE_FIELDS
    for key in managed.MANAGED_KEYS:
        assert "Secret" not in str(Settings.model_fields[key].annotation), f"{key} is a secret"
    for key, spec in catalogue.items():
        assert spec["type"] == _kind(Settings.model_fields[key].annotation), key
        assert spec["doc"].strip(), key


def test_generated_templates_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "installers/gen_managed.py"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_every_template_mentions_every_managed_key() -> None:
    catalogue = tomllib.loads((REPO / "installers/managed-keys.toml").read_text())
    texts = {
        "mobileconfig": (REPO / "installers/macos/governor.mobileconfig").read_text(),
        "managed.toml.example": (REPO / "installers/linux/managed.toml.example").read_text(),
        "docs/deploy.md": (REPO / "docs/deploy.md").read_text(),
        "adml": (REPO / "installers/windows/admx/en-US/Governor.adml").read_text(),
    }
    for name, text in texts.items():
        for key in catalogue:
            assert key in text, f"{key} missing from {name}"


# ---------------------------------------------------------------- the real agent


def test_agent_listens_where_the_managed_setting_says(tmp_path: Path) -> None:
    managed_dir = tmp_path / "etc"
    managed_dir.mkdir()
    port = free_port()
    (managed_dir / "managed.toml").write_text(f'listen = "127.0.0.1:{port}"\n')
    agent = AgentProcess(tmp_path / "data", env={"GOVERNOR_MANAGED_DIR": str(managed_dir)})
    agent.port = port  # the env's GOVERNOR_LISTEN (another free port) is locked out
    with agent:
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    assert "managed_key_locked key=listen ignored=env" in agent.log()
