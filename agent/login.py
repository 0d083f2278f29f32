"""`governor login` / `logout`: the RFC 8628 device flow against the control plane.

    POST /api/auth/cli/device-code  → device_code, user_code, verification_uri[_complete], interval
    POST /api/auth/cli/exchange     → polled at `interval` until tokens (or an RFC 8628 error)
    POST /api/auth/cli/virtual-key  → the personal VK, when the exchange did not carry one
    POST /api/auth/cli/refresh      → new access token before the old one expires
    POST /api/auth/cli/logout       → server-side revoke; local wipe either way

Tokens and the personal VK go to the OS keychain (`agent.secrets`: a 0600 file
with a warning where no keychain exists); non-secret account facts (who, which
org, which key id, which control plane) to `<data_dir>/account.json` (0600).

Every failure is a `LoginError` carrying a one-line, actionable message and a
distinct process exit code (`EXIT_CODES`), so scripts and MDM can tell them
apart.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import socket
import time
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from agent import secrets
from agent.version import VERSION

__all__ = [
    "ACCESS_TOKEN",
    "EXIT_CODES",
    "PERSONAL_VK",
    "REFRESH_TOKEN",
    "Account",
    "LoginError",
    "access_token",
    "load_account",
    "login",
    "logout",
    "mint_virtual_key",
    "personal_vk",
]

PREFIX = "/api/auth/cli"
ACCESS_TOKEN = "cp_access_token"
REFRESH_TOKEN = "cp_refresh_token"
PERSONAL_VK = "personal_vk"
SECRET_NAMES = (ACCESS_TOKEN, REFRESH_TOKEN, PERSONAL_VK)
REFRESH_MARGIN_S = 300  # refresh when less than 5 minutes remain
USER_AGENT = f"governor/{VERSION}"

# code -> (exit code, one actionable line). Distinct exit codes, stable across releases.
EXIT_CODES: dict[str, tuple[int, str]] = {
    "no_control_plane": (3, "no control plane configured: pass --control-plane URL or set GOVERNOR_CONTROL_PLANE_URL"),
    "control_plane_unreachable": (4, "cannot reach the control plane at {url}: check the URL and your network, then retry"),
    "access_denied": (5, "the sign-in was denied in the browser: run `governor login` again and approve it"),
    "expired_token": (6, "the sign-in code expired before it was approved: run `governor login` again"),
    "no_eligible_providers": (
        7,
        "your org has no model provider your key may use yet: ask your admin to add a provider to your "
        "routing policy, then run `governor login` again",
    ),
    "no_default_routing_policy": (
        8,
        "your org has no routing policy for you yet: ask your admin to create a default routing policy, "
        "then run `governor login` again",
    ),
    "governance_required": (
        9,
        "your org requires governance to be enabled before CLI sign-in: ask your admin to enable it",
    ),
    "already_resolved": (10, "this sign-in code was already used: run `governor login` again"),
    "session_expired": (11, "your session has expired or was revoked: run `governor login`"),
    "not_logged_in": (12, "not signed in: run `governor login`"),
    "keychain_error": (13, "could not store credentials ({detail}): unlock your keychain or check {data_dir}"),
    "server_error": (14, "the control plane failed ({detail}): retry in a minute; if it persists, tell your admin"),
    "bad_response": (15, "the control plane sent an answer Governor does not understand ({detail}): update Governor"),
    "rate_limited": (16, "the control plane is rate limiting sign-ins: wait a minute and retry"),
    "forbidden": (17, "the control plane refused the sign-in ({detail}): ask your admin about your access"),
}


class LoginError(Exception):
    """A login/logout/refresh failure: `code` (EXIT_CODES key), one-line `message`, `exit_code`."""

    def __init__(self, code: str, **fmt: Any) -> None:
        self.code = code
        self.exit_code, template = EXIT_CODES[code]
        try:
            self.message = template.format(**fmt)
        except KeyError:
            self.message = template
        super().__init__(self.message)


@dataclass
class Account:
    control_plane_url: str
    user: dict[str, Any]
    organization: dict[str, Any]
    vk_id: str | None
    vk_prefix: str | None
    access_expires_at: float
    refresh_expires_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _account_path(data_dir: Path) -> Path:
    return data_dir / "account.json"


def load_account(data_dir: Path) -> Account | None:
    try:
        return Account(**json.loads(_account_path(data_dir).read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def _save_account(data_dir: Path, account: Account) -> None:
    secrets.ensure_private_dir(data_dir)
    path = _account_path(data_dir)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(account.to_json(), fh, indent=2)
    os.replace(tmp, path)


def _store(name: str, value: str, data_dir: Path) -> None:
    try:
        secrets.set_secret(name, value, data_dir)
    except OSError as exc:
        raise LoginError("keychain_error", detail=type(exc).__name__, data_dir=data_dir) from None


def client_info() -> dict[str, str]:
    host = socket.gethostname()
    return {
        "hostname": host,
        "uname": " ".join(platform.uname()[:3]),
        "platform": platform.system().lower(),
        "device_label": f"governor on {host}",
    }


def _client(base_url: str, transport: httpx.AsyncBaseTransport | None, timeout: float = 15.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        transport=transport,
        timeout=timeout,
        headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
    )


def _error_code(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    err = body.get("error")
    if isinstance(err, str):
        return err
    if isinstance(err, dict):
        return str(err.get("code") or err.get("type") or "")
    return ""


def _raise_for(response: httpx.Response, url: str) -> None:
    """Map a non-2xx control-plane answer onto a LoginError (never returns for non-2xx)."""
    if response.is_success:
        return
    code = _error_code(response)
    if code in EXIT_CODES:
        raise LoginError(code, url=url, detail=code)
    status = response.status_code
    if status == 409:
        raise LoginError("no_eligible_providers")
    if status == 401:
        raise LoginError("session_expired")
    if status == 403:
        raise LoginError("forbidden", detail=code or "HTTP 403")
    if status == 429:
        raise LoginError("rate_limited")
    if status >= 500:
        raise LoginError("server_error", detail=f"HTTP {status}")
    raise LoginError("bad_response", detail=f"HTTP {status} {code}".strip())


def _json(response: httpx.Response, *required: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise LoginError("bad_response", detail="not JSON") from None
    if not isinstance(body, dict) or any(k not in body for k in required):
        missing = [k for k in required if not isinstance(body, dict) or k not in body]
        raise LoginError("bad_response", detail=f"missing {', '.join(missing)}")
    return body


async def _post(client: httpx.AsyncClient, path: str, url: str, **kwargs: Any) -> httpx.Response:
    try:
        return await client.post(PREFIX + path, **kwargs)
    except httpx.HTTPError:
        raise LoginError("control_plane_unreachable", url=url) from None


def _can_open_browser() -> bool:
    if os.environ.get("SSH_CONNECTION") or os.environ.get("SSH_TTY"):
        return False
    if platform.system() == "Linux" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    return True


async def login(
    control_plane_url: str | None,
    data_dir: Path,
    *,
    say: Callable[[str], None] = print,
    open_browser: bool = True,
    transport: httpx.AsyncBaseTransport | None = None,
    sleep: Callable[[float], Any] = asyncio.sleep,
) -> Account:
    """Run the device flow to the end; store tokens and the personal VK; return the account."""
    if not control_plane_url:
        raise LoginError("no_control_plane")
    url = control_plane_url.rstrip("/")
    async with _client(url, transport) as client:
        response = await _post(client, "/device-code", url, json={"credential_type": "device"})
        _raise_for(response, url)
        grant = _json(response, "device_code", "user_code", "verification_uri")
        link = grant.get("verification_uri_complete") or grant["verification_uri"]
        say(f"To sign in, open {link} and confirm the code {grant['user_code']}")
        if open_browser and _can_open_browser():
            await asyncio.to_thread(webbrowser.open, link)
        interval = float(grant.get("interval", 5))
        deadline = time.monotonic() + float(grant.get("expires_in") or 600)
        info = client_info()
        while True:
            if time.monotonic() > deadline:
                raise LoginError("expired_token")
            await sleep(interval)
            response = await _post(client, "/exchange", url, json={"device_code": grant["device_code"], "client_info": info})
            code = _error_code(response) if not response.is_success else ""
            if code == "authorization_pending":
                continue
            if code == "slow_down":  # RFC 8628 §3.5: add 5 seconds to the interval from now on
                interval += 5
                continue
            _raise_for(response, url)
            tokens = _json(response, "access_token", "refresh_token")
            break
        now = time.time()
        _store(ACCESS_TOKEN, tokens["access_token"], data_dir)
        _store(REFRESH_TOKEN, tokens["refresh_token"], data_dir)
        vk = tokens.get("default_personal_vk") or {}
        if not vk.get("secret"):
            vk = await _mint(client, url, tokens["access_token"], info["device_label"])
        _store(PERSONAL_VK, vk["secret"], data_dir)
        account = Account(
            control_plane_url=url,
            user=dict(tokens.get("user") or {}),
            organization=dict(tokens.get("organization") or {}),
            vk_id=vk.get("id"),
            vk_prefix=vk.get("prefix"),
            access_expires_at=now + float(tokens.get("expires_in") or 3600),
            refresh_expires_at=now + float(tokens["refresh_expires_in"]) if tokens.get("refresh_expires_in") else None,
        )
        _save_account(data_dir, account)
        who = account.user.get("email") or account.user.get("name") or "you"
        org = account.organization.get("name") or account.organization.get("slug") or "your org"
        say(f"Signed in as {who} ({org}); personal key {account.vk_prefix or account.vk_id or ''} stored.".replace(" ;", ";"))
        return account


async def _mint(client: httpx.AsyncClient, url: str, token: str, label: str) -> dict[str, Any]:
    response = await _post(
        client, "/virtual-key", url, json={"device_label": label}, headers={"Authorization": f"Bearer {token}"}
    )
    _raise_for(response, url)
    return _json(response, "id", "secret")


async def access_token(
    data_dir: Path, *, now: float | None = None, transport: httpx.AsyncBaseTransport | None = None
) -> str:
    """A valid access token, refreshed first when it expires within 5 minutes."""
    account = load_account(data_dir)
    token = await asyncio.to_thread(secrets.get_secret, ACCESS_TOKEN, data_dir)
    if account is None or token is None:
        raise LoginError("not_logged_in")
    now = time.time() if now is None else now
    if account.access_expires_at - now > REFRESH_MARGIN_S:
        return token
    refresh = await asyncio.to_thread(secrets.get_secret, REFRESH_TOKEN, data_dir)
    if not refresh:
        raise LoginError("session_expired")
    url = account.control_plane_url
    async with _client(url, transport) as client:
        response = await _post(client, "/refresh", url, json={"refresh_token": refresh})
        _raise_for(response, url)
        body = _json(response, "access_token")
    _store(ACCESS_TOKEN, body["access_token"], data_dir)
    if body.get("refresh_token"):
        _store(REFRESH_TOKEN, body["refresh_token"], data_dir)
    account.access_expires_at = now + float(body.get("expires_in") or 3600)
    if body.get("refresh_expires_in"):
        account.refresh_expires_at = now + float(body["refresh_expires_in"])
    _save_account(data_dir, account)
    return str(body["access_token"])


async def mint_virtual_key(data_dir: Path, *, transport: httpx.AsyncBaseTransport | None = None) -> str:
    """Ask for this device's personal VK again (after `VK_ROTATED`); store and return the secret."""
    token = await access_token(data_dir, transport=transport)
    account = load_account(data_dir)
    assert account is not None  # access_token() raised otherwise
    url = account.control_plane_url
    async with _client(url, transport) as client:
        vk = await _mint(client, url, token, client_info()["device_label"])
    _store(PERSONAL_VK, vk["secret"], data_dir)
    account.vk_id, account.vk_prefix = vk.get("id"), vk.get("prefix")
    _save_account(data_dir, account)
    return str(vk["secret"])


def personal_vk(data_dir: Path) -> str | None:
    """The stored personal VK secret (blocking keychain read: call off the event loop)."""
    return secrets.get_secret(PERSONAL_VK, data_dir)


async def logout(
    data_dir: Path, *, say: Callable[[str], None] = print, transport: httpx.AsyncBaseTransport | None = None
) -> bool:
    """Revoke the session on the control plane, then wipe every local credential.

    Returns True when the server confirmed the revoke; the local wipe happens
    either way (an unreachable control plane must not keep a credential alive
    on the laptop).
    """
    account = load_account(data_dir)
    access = secrets.get_secret(ACCESS_TOKEN, data_dir)
    refresh = secrets.get_secret(REFRESH_TOKEN, data_dir)
    revoked = False
    if account is not None and (access or refresh):
        try:
            async with _client(account.control_plane_url, transport, timeout=10.0) as client:
                response = await client.post(
                    PREFIX + "/logout",
                    json={"refresh_token": refresh} if refresh else {},
                    headers={"Authorization": f"Bearer {access}"} if access else {},
                )
            revoked = response.is_success or response.status_code == 401  # 401: already gone
            if not revoked:
                say(f"warning: the control plane did not confirm the sign-out (HTTP {response.status_code}); "
                    "local credentials are wiped anyway")
        except httpx.HTTPError:
            say("warning: could not reach the control plane to revoke the session; local credentials are wiped anyway")
    for name in SECRET_NAMES:
        secrets.delete_secret(name, data_dir)
    try:
        _account_path(data_dir).unlink()
    except FileNotFoundError:
        pass
    say("Signed out; credentials removed from this laptop.")
    return revoked
