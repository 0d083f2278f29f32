"""`governor login` / `logout` against the loopback fake control plane."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keyring
import pytest
from keyring.backends import fail

from agent import login, secrets
from tests.fakes.controlplane import FakeControlPlane


@pytest.fixture(autouse=True)
def no_keychain() -> Iterator[None]:
    """Secrets go to the 0600 file fallback in the test's data dir, never the developer's keychain."""
    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    yield
    keyring.set_keyring(previous)


@pytest.fixture
def cp() -> Iterator[FakeControlPlane]:
    with FakeControlPlane() as fake:
        yield fake


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def run_login(cp: FakeControlPlane, data_dir: Path, **kw: Any) -> tuple[login.Account, list[str], Sleeps]:
    lines: list[str] = []
    sleeps = Sleeps()
    account = asyncio.run(login.login(cp.url, data_dir, say=lines.append, open_browser=False, sleep=sleeps, **kw))
    return account, lines, sleeps


def test_device_flow_stores_tokens_and_personal_vk(cp: FakeControlPlane, tmp_path: Path) -> None:
    cp.configure(approve_after=2)
    account, lines, sleeps = run_login(cp, tmp_path)
    assert "/cli/auth?code=" in lines[0] and "confirm the code" in lines[0]
    assert sleeps.calls == [5.0, 5.0, 5.0]  # the server's interval; two pending polls, then approved
    assert account.user["email"] == "ada@example.com" and account.vk_id == "vk_fake_ada"
    assert secrets.get_secret(login.PERSONAL_VK, tmp_path) == cp.vk_secret
    assert secrets.get_secret(login.ACCESS_TOKEN, tmp_path) in cp.access_tokens
    assert secrets.get_secret(login.REFRESH_TOKEN, tmp_path) in cp.refresh_tokens
    assert cp.minted_vks == 1  # the exchange carried no VK secret: minted through /virtual-key
    exchange = json.loads(cp.requests_to("exchange")[0].body)
    assert set(exchange["client_info"]) == {"hostname", "uname", "platform", "device_label"}
    # Secrets are in the 0600 fallback file, never in account.json.
    assert stat.S_IMODE(os.stat(tmp_path / "secrets.json").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "account.json").st_mode) == 0o600
    assert cp.vk_secret not in (tmp_path / "account.json").read_text()
    assert "Signed in as ada@example.com" in lines[-1]


def test_slow_down_adds_five_seconds(cp: FakeControlPlane, tmp_path: Path) -> None:
    cp.configure(slow_down_polls=2, approve_after=0)
    _, _, sleeps = run_login(cp, tmp_path)
    assert sleeps.calls == [5.0, 10.0, 15.0]


@pytest.mark.parametrize(
    ("knobs", "code", "exit_code", "words"),
    [
        ({"deny": True}, "access_denied", 5, "denied"),
        ({"expire": True}, "expired_token", 6, "expired"),
        ({"vk_error": "no_eligible_providers"}, "no_eligible_providers", 7, "ask your admin"),
        ({"vk_error": "no_default_routing_policy"}, "no_default_routing_policy", 8, "no routing policy for you yet"),
        ({"fail": {"device-code": 503}}, "server_error", 14, "retry"),
        ({"malformed": {"device-code"}}, "bad_response", 15, "update Governor"),
    ],
)
def test_each_server_error_is_one_actionable_line_with_its_own_exit_code(
    cp: FakeControlPlane, tmp_path: Path, knobs: dict[str, Any], code: str, exit_code: int, words: str
) -> None:
    cp.configure(**knobs)
    with pytest.raises(login.LoginError) as info:
        run_login(cp, tmp_path)
    assert info.value.code == code and info.value.exit_code == exit_code
    assert words in info.value.message and "\n" not in info.value.message


def test_exit_codes_are_distinct() -> None:
    codes = [exit_code for exit_code, _ in login.EXIT_CODES.values()]
    assert len(codes) == len(set(codes)) and 0 not in codes and 1 not in codes


def test_unreachable_and_unconfigured(tmp_path: Path) -> None:
    with FakeControlPlane() as cp:
        url = cp.url
    with pytest.raises(login.LoginError) as info:
        asyncio.run(login.login(url, tmp_path, say=lambda _: None, open_browser=False))
    assert info.value.code == "control_plane_unreachable" and url in info.value.message
    with pytest.raises(login.LoginError) as info:
        asyncio.run(login.login(None, tmp_path, say=lambda _: None))
    assert info.value.code == "no_control_plane" and "GOVERNOR_CONTROL_PLANE_URL" in info.value.message


def test_access_token_refreshes_before_expiry(cp: FakeControlPlane, tmp_path: Path) -> None:
    cp.configure(access_expires_in=200)  # inside the 5-minute margin: refresh at once
    account, _, _ = run_login(cp, tmp_path)
    old_access = secrets.get_secret(login.ACCESS_TOKEN, tmp_path)
    old_refresh = secrets.get_secret(login.REFRESH_TOKEN, tmp_path)
    cp.configure(access_expires_in=3600)
    token = asyncio.run(login.access_token(tmp_path))
    assert token != old_access and token in cp.access_tokens
    assert secrets.get_secret(login.REFRESH_TOKEN, tmp_path) not in (None, old_refresh)  # rotated
    assert login.load_account(tmp_path).access_expires_at > account.access_expires_at  # type: ignore[union-attr]
    assert asyncio.run(login.access_token(tmp_path)) == token  # fresh: no second refresh
    assert cp.count("refresh") == 1


def test_refresh_refused_means_sign_in_again(cp: FakeControlPlane, tmp_path: Path) -> None:
    cp.configure(access_expires_in=10)
    run_login(cp, tmp_path)
    cp.refresh_tokens.clear()  # the session was revoked on the control plane
    with pytest.raises(login.LoginError) as info:
        asyncio.run(login.access_token(tmp_path))
    assert info.value.code == "session_expired" and "governor login" in info.value.message


def test_rotation_mints_a_new_key(cp: FakeControlPlane, tmp_path: Path) -> None:
    run_login(cp, tmp_path)
    cp.vk_secret = "vk-lw-rotated000000000000000"
    assert asyncio.run(login.mint_virtual_key(tmp_path)) == cp.vk_secret
    assert login.personal_vk(tmp_path) == cp.vk_secret


def test_logout_revokes_and_wipes(cp: FakeControlPlane, tmp_path: Path) -> None:
    run_login(cp, tmp_path)
    refresh = secrets.get_secret(login.REFRESH_TOKEN, tmp_path)
    lines: list[str] = []
    assert asyncio.run(login.logout(tmp_path, say=lines.append)) is True
    assert refresh in cp.revoked_refresh
    for name in login.SECRET_NAMES:
        assert secrets.get_secret(name, tmp_path) is None
    assert login.load_account(tmp_path) is None
    with pytest.raises(login.LoginError) as info:
        asyncio.run(login.access_token(tmp_path))
    assert info.value.code == "not_logged_in"


def test_logout_offline_still_wipes(cp: FakeControlPlane, tmp_path: Path) -> None:
    run_login(cp, tmp_path)
    cp.down()
    lines: list[str] = []
    assert asyncio.run(login.logout(tmp_path, say=lines.append)) is False
    assert "could not reach" in lines[0]
    assert secrets.get_secret(login.PERSONAL_VK, tmp_path) is None


def test_cli_login_and_logout(cp: FakeControlPlane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    from agent import cli

    monkeypatch.setenv("GOVERNOR_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("GOVERNOR_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.delenv("GOVERNOR_CONTROL_PLANE_URL", raising=False)
    assert cli.main(["login", "--no-browser"]) == 3  # no control plane anywhere
    assert "--control-plane" in capsys.readouterr().err
    cp.configure(interval=0.01)
    assert cli.main(["login", "--control-plane", cp.url, "--no-browser"]) == 0
    assert "Signed in as ada@example.com" in capsys.readouterr().out
    cp.configure(vk_error="no_default_routing_policy")
    monkeypatch.setenv("GOVERNOR_CONTROL_PLANE_URL", cp.url)
    assert cli.main(["login", "--no-browser"]) == 8
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no routing policy for you yet" in err
    assert cli.main(["logout"]) == 0
    assert secrets.get_secret(login.PERSONAL_VK, tmp_path) is None
