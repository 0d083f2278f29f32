"""The local-API client that the CLI and the tray share.

Everything that leaves this module as an error is one of these (httpx's
errors are translated here, once, so callers never see a socket error):

    ClientError                  base: `str(exc)` is a sentence for a human
    ├── AgentNotRunning          nothing listens on the agent's port
    ├── AgentUnreachable         something listens, but the call timed out or broke
    ├── Unauthorized             the local key was refused (401/403)
    └── ApiError                 any other non-2xx answer; `.status`, `.code`

A client is cheap: one `httpx.Client` with short timeouts. Calls are
synchronous; the tray runs them on its poller thread, never on the UI thread.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import httpx

API_PREFIX = "/_governor/v1"
CONNECT_TIMEOUT_S = 1.0
READ_TIMEOUT_S = 5.0


class _Default:
    """Sentinel for "not passed" (style rule 18): `None` is a real value for a timeout."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()


def start_hint() -> str:
    """How to start the agent on this OS, for messages."""
    if sys.platform == "darwin":
        return "start it with `governor run` (or `launchctl kickstart gui/$UID/dev.governor.agent`)"
    if sys.platform == "win32":
        return "start it with `governor run` (or the Governor logon task in Task Scheduler)"
    return "start it with `governor run` (or `systemctl --user start governor`)"


class ClientError(Exception):
    """A local-API call failed; the message says what happened and what to do."""


class AgentNotRunning(ClientError):
    def __init__(self, base_url: str):
        self.base_url = base_url
        super().__init__(f"the Governor agent is not running at {base_url}: {start_hint()}")


class AgentUnreachable(ClientError):
    def __init__(self, base_url: str, detail: str):
        self.base_url = base_url
        super().__init__(
            f"the Governor agent at {base_url} did not answer ({detail}); "
            "check `governor doctor`, or restart it"
        )


class Unauthorized(ClientError):
    def __init__(self, base_url: str):
        self.base_url = base_url
        super().__init__(
            f"the agent at {base_url} refused the local key; the agent and this command "
            "disagree on it (GOVERNOR_LOCAL_KEY set in one place only?) — compare `governor key`"
        )


class ApiError(ClientError):
    def __init__(self, status: int, code: str, message: str):
        self.status = status
        self.code = code
        super().__init__(f"agent answered {status} {code}: {message}")


def _error_fields(response: httpx.Response) -> tuple[str, str]:
    """(code, message) from any of the gateway's error envelopes, tolerating non-JSON."""
    try:
        body = response.json()
    except ValueError:
        return "http_error", response.text[:200]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("code") or error.get("type") or "error"), str(error.get("message", ""))
    if isinstance(error, str):
        return error, str(body.get("message", ""))
    return "http_error", str(body)[:200]


@dataclass(frozen=True, slots=True)
class Endpoint:
    base_url: str
    key: str | None


def base_url_for(listen: str) -> str:
    host, _, port = listen.rpartition(":")
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


class LocalClient:
    def __init__(self, base_url: str, key: str | None, timeout: float | Any = DEFAULT):
        self.base_url = base_url.rstrip("/")
        self.key = key
        read = READ_TIMEOUT_S if timeout is DEFAULT else timeout
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(read, connect=CONNECT_TIMEOUT_S),
            trust_env=False,  # loopback only: never through a proxy from the environment
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LocalClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ---------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError:
            raise AgentNotRunning(self.base_url) from None
        except httpx.TimeoutException:
            raise AgentUnreachable(self.base_url, "timed out") from None
        except httpx.TransportError as exc:
            raise AgentUnreachable(self.base_url, type(exc).__name__) from None
        if response.status_code in (401, 403) and path.startswith(API_PREFIX):
            raise Unauthorized(self.base_url)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._request(method, path, **kwargs)
        if response.status_code >= 400:
            raise ApiError(response.status_code, *_error_fields(response))
        body = response.json()
        return body if isinstance(body, dict) else {"value": body}

    # -- calls (one per user action) --------------------------------------

    def started(self) -> bool:
        """True once the agent answers /startupz with 200; False while it starts; raises when down."""
        return self._request("GET", "/startupz").status_code == 200

    def status(self) -> dict[str, Any]:
        return self._json("GET", f"{API_PREFIX}/status")

    def calls(self) -> list[dict[str, Any]]:
        return list(self._json("GET", f"{API_PREFIX}/calls").get("calls", []))

    def page_link(self) -> dict[str, Any]:
        """A one-time link to the spend page (`{"url": …}`, single use, valid for a minute)."""
        return self._json("POST", f"{API_PREFIX}/page-link")

    def sync(self) -> dict[str, Any]:
        """Ask the agent to revalidate its bundle now."""
        return self._json("POST", f"{API_PREFIX}/sync")


def from_settings(settings: Any, timeout: float | Any = DEFAULT) -> LocalClient:
    """A client for the agent these settings describe (same listen address, same local key)."""
    from agent import secrets

    configured = settings.local_key.get_secret_value() if settings.local_key else None
    key = secrets.local_key(configured, settings.data_dir)
    return LocalClient(base_url_for(settings.listen), key, timeout)
