"""`governor doctor`: check, in order, everything a working setup needs, and
give each failing check the one command or step that fixes it.

Checks run top to bottom and share what they learned through `Findings`
(settings, the agent's status) so each talks to the agent at most once.
A check that cannot apply (no agent, no bundle) is `skip`, not `fail`.
Exit code: 0 when nothing failed (warnings allowed), 1 otherwise.
"""

from __future__ import annotations

import email.utils
import os
import re
import shutil
import socket
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from agent import client as api

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
UPSTREAM_TIMEOUT_S = 2.0
CLOCK_SKEW_LIMIT_S = 300.0
PROVIDERS = ("anthropic", "openai", "gemini")
SYMBOLS = {OK: "✓", WARN: "!", FAIL: "✗", SKIP: "-"}


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    outcome: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{SYMBOLS[self.outcome]} {self.name}: {self.detail}"
        return text + (f"\n    fix: {self.fix}" if self.fix and self.outcome in (WARN, FAIL) else "")


@dataclass
class Findings:
    settings: Any = None
    settings_error: str | None = None
    local: api.LocalClient | None = None
    running: bool = False
    status: dict[str, Any] | None = None
    upstream_dates: list[float] = field(default_factory=list)


Check = Callable[[Findings], Iterator[Result]]


def check_config(f: Findings) -> Iterator[Result]:
    from agent.config import config_file_path

    if f.settings_error:
        yield Result("config", FAIL, f.settings_error.splitlines()[0], f"edit {config_file_path()} or the GOVERNOR_* variables")
    else:
        yield Result("config", OK, f"valid ({config_file_path()}{'' if config_file_path().exists() else ', absent: defaults'})")


def check_agent_running(f: Findings) -> Iterator[Result]:
    if f.local is None:
        yield Result("agent running", SKIP, "no valid configuration")
        return
    try:
        f.running = f.local.started()
    except api.AgentNotRunning:
        yield Result("agent running", FAIL, f"nothing answers at {f.local.base_url}", api.start_hint())
        return
    except api.ClientError as exc:
        yield Result("agent running", FAIL, str(exc), "restart the agent")
        return
    if f.running:
        yield Result("agent running", OK, f"ready at {f.local.base_url}")
    else:
        yield Result("agent running", WARN, "starting or draining (/startupz not 200)", "wait a few seconds, then run doctor again")


def check_port_owner(f: Findings) -> Iterator[Result]:
    if f.settings is None or f.local is None:
        return
    host, port = f.settings.listen_host, f.settings.listen_port
    if not f.running:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                yield Result(
                    "port",
                    FAIL,
                    f"{host}:{port} is taken by another program",
                    f"find it with `lsof -iTCP:{port} -sTCP:LISTEN`, or set GOVERNOR_LISTEN=127.0.0.1:<free port>",
                )
                return
        yield Result("port", OK, f"{host}:{port} is free for the agent")
        return
    try:
        body = httpx.get(f.local.base_url + "/", timeout=2.0, trust_env=False).json()
    except (httpx.HTTPError, ValueError):
        body = {}
    if body.get("service") == "governor":
        yield Result("port", OK, f"{host}:{port} is served by Governor {body.get('version', '')}".rstrip())
    else:
        yield Result("port", FAIL, f"{host}:{port} answers, but not as Governor", f"stop what listens there (`lsof -iTCP:{port}`)")


def check_key(f: Findings) -> Iterator[Result]:
    if not f.running or f.local is None:
        yield Result("local key", SKIP, "agent not running")
        return
    try:
        f.status = f.local.status()
    except api.Unauthorized:
        yield Result(
            "local key",
            FAIL,
            "the agent refused this machine's local key",
            "unset GOVERNOR_LOCAL_KEY where it differs, or restart the agent so both read the keychain",
        )
        return
    except api.ClientError as exc:
        yield Result("local key", FAIL, str(exc), "restart the agent")
        return
    yield Result("local key", OK, "accepted by the agent")


def _credential_configured(f: Findings, provider: str) -> bool | None:
    if f.status is not None:
        info = (f.status.get("providers") or {}).get(provider)
        if info is not None:
            return info.get("credential") == "configured"
    if f.settings is None:
        return None
    if getattr(f.settings, f"{provider}_api_key", None):
        return True
    from agent import secrets

    return secrets.get_secret(f"{provider}_api_key", Path(f.settings.data_dir)) is not None


def check_credentials(f: Findings) -> Iterator[Result]:
    found = {p: _credential_configured(f, p) for p in PROVIDERS}
    if all(v is None for v in found.values()):
        return
    none_set = not any(found.values())
    for provider, configured in found.items():
        name = f"{provider} credential"
        if configured:
            yield Result(name, OK, "present")
        else:
            yield Result(
                name,
                FAIL if none_set else WARN,
                "missing: calls to this provider fail unless the client brings its own key",
                f"governor secret set {provider}_api_key   (or GOVERNOR_{provider.upper()}_API_KEY)",
            )


def check_upstreams(f: Findings) -> Iterator[Result]:
    if f.settings is None:
        return
    for provider in PROVIDERS:
        url = str(getattr(f.settings, f"{provider}_base_url")).rstrip("/")
        try:
            response = httpx.head(url + "/", timeout=UPSTREAM_TIMEOUT_S, follow_redirects=False)
        except httpx.HTTPError as exc:
            yield Result(
                f"{provider} upstream",
                FAIL,
                f"{url} unreachable ({type(exc).__name__})",
                f"check the network / proxy, or GOVERNOR_{provider.upper()}_BASE_URL",
            )
            continue
        date = response.headers.get("date")
        if date:
            try:
                f.upstream_dates.append(email.utils.parsedate_to_datetime(date).timestamp())
            except (TypeError, ValueError):
                pass
        yield Result(f"{provider} upstream", OK, f"{url} answered HTTP {response.status_code}")


def check_bundle(f: Findings) -> Iterator[Result]:
    if f.status is None:
        yield Result("policy bundle", SKIP, "agent status not available")
        return
    bundle = f.status.get("bundle")
    if not bundle:
        yield Result(
            "policy bundle",
            WARN,
            "no governance bundle loaded: calls are metered but no policy or budget applies",
            "set GOVERNOR_BUNDLE_PATH to the bundle IT gave you, or log in to the control plane",
        )
        return
    age = bundle.get("age_s")
    if bundle.get("stale"):
        yield Result(
            "policy bundle",
            FAIL,
            f"revision {bundle.get('revision')} is stale ({int(age or 0)}s old)",
            "check the control-plane connection (`governor status`), then tray → Sync now",
        )
    else:
        yield Result("policy bundle", OK, f"revision {bundle.get('revision')} from {bundle.get('source')}, {int(age or 0)}s old")


def check_keychain(f: Findings) -> Iterator[Result]:
    import keyring
    from keyring.backends import fail

    backend = keyring.get_keyring()
    if isinstance(backend, fail.Keyring):
        where = Path(f.settings.data_dir) / "secrets.json" if f.settings else "the data dir"
        yield Result(
            "keychain",
            WARN,
            f"no OS keychain; secrets are kept in {where} (0600)",
            "install and unlock a Secret Service (gnome-keyring or KeePassXC) for keychain storage",
        )
    else:
        yield Result("keychain", OK, f"{type(backend).__module__}.{type(backend).__name__}")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def check_data_dir(f: Findings) -> Iterator[Result]:
    if f.settings is None or os.name != "posix":
        return
    data_dir = Path(f.settings.data_dir)
    if not data_dir.exists():
        yield Result("data dir", OK, f"{data_dir} not created yet (the agent creates it 0700)")
        return
    loose = []
    if _mode(data_dir) & 0o077:
        loose.append((data_dir, 0o700))
    for path in sorted(data_dir.rglob("*")):
        if path.is_symlink():
            continue
        if path.is_dir() and _mode(path) & 0o077:
            loose.append((path, 0o700))
        elif path.is_file() and _mode(path) & 0o077 and path.suffix != ".log":
            loose.append((path, 0o600))
    if not loose:
        yield Result("data dir", OK, f"{data_dir} private (0700 / 0600)")
        return
    shown = ", ".join(f"{p} is {_mode(p):04o}" for p, _ in loose[:3]) + (" …" if len(loose) > 3 else "")
    fixes = "; ".join(f"chmod {want:o} '{p}'" for p, want in loose[:5])
    yield Result("data dir", FAIL, f"readable by others: {shown}", fixes)


def check_clock(f: Findings, now: Callable[[], float] = time.time) -> Iterator[Result]:
    if not f.upstream_dates:
        yield Result("clock", SKIP, "no upstream Date header to compare with")
        return
    skew = now() - f.upstream_dates[0]
    if abs(skew) > CLOCK_SKEW_LIMIT_S:
        yield Result(
            "clock",
            FAIL,
            f"this machine's clock is {abs(skew):.0f}s {'ahead of' if skew > 0 else 'behind'} the upstream's",
            "enable time sync (`timedatectl set-ntp true`, or Date & Time → Set automatically)",
        )
    else:
        yield Result("clock", OK, f"within {abs(skew):.0f}s of the upstream")


def check_control_plane(f: Findings) -> Iterator[Result]:
    """Configured or logged-in control plane: reachable, and this laptop's key accepted by it."""
    if f.settings is None:
        return
    from agent import login

    data_dir = Path(f.settings.data_dir)
    account = login.load_account(data_dir)
    url = (f.settings.control_plane_url or (account.control_plane_url if account else "") or "").rstrip("/")
    if not url:
        yield Result("control plane", SKIP, "standalone: no control plane configured, not logged in")
        return
    if account is None or account.control_plane_url.rstrip("/") != url:
        yield Result("control plane", FAIL, f"{url} is configured, but this laptop is not logged in to it", "governor login")
        return
    vk = login.personal_vk(data_dir)
    if not vk:
        yield Result("control plane", FAIL, "logged in, but this laptop's key is missing from the keychain", "governor login")
        return
    try:
        response = httpx.get(
            url + "/api/agent/v1/bundle",
            headers={"Authorization": f"Bearer {vk}", "User-Agent": login.USER_AGENT},
            timeout=UPSTREAM_TIMEOUT_S,
        )
    except httpx.HTTPError as exc:
        yield Result(
            "control plane",
            FAIL,
            f"{url} unreachable ({type(exc).__name__})",
            "check the network or proxy (or GOVERNOR_CONTROL_PLANE_URL), then run `governor doctor` again",
        )
        return
    who = account.user.get("email") or account.user.get("name") or "?"
    org = account.organization.get("name") or account.organization.get("id") or "?"
    if response.status_code in (200, 304):
        yield Result("control plane", OK, f"{url} reachable; logged in as {who} ({org})")
    elif response.status_code in (401, 403):
        try:
            code = str(response.json()["error"]["code"])
        except (ValueError, KeyError, TypeError):
            code = f"HTTP {response.status_code}"
        yield Result("control plane", FAIL, f"{url} refused this laptop's key ({code})", "governor login")
    else:
        yield Result(
            "control plane", FAIL, f"{url} answered HTTP {response.status_code}", "retry in a minute; if it persists, tell your admin"
        )


# What `governor setup <tool>` points at the agent, by the variable a shell would carry.
TOOL_URL_VARIABLES = {"aider": "OPENAI_API_BASE", "claude": "ANTHROPIC_BASE_URL", "gemini": "GOOGLE_GEMINI_BASE_URL"}


def _setup_context(f: Findings, tool: str) -> Any:
    from agent import toolsetup

    env = dict(os.environ)
    ctx = toolsetup.Context(
        home=Path.home(), env=env, data_dir=Path(f.settings.data_dir), base_url=api.base_url_for(f.settings.listen),
        governor=toolsetup.governor_command(),
    )
    # The rc lines name the `governor` that ran setup: compare against that one, not against this process's.
    rc = toolsetup.rc_edit(ctx, tool, {})
    try:
        named = re.search(r'"\$\((.+?) key\)"', rc.path.read_text())
    except OSError:
        named = None
    return toolsetup.Context(ctx.home, env, ctx.data_dir, ctx.base_url, named.group(1)) if named else ctx


def _check_tool(f: Findings, tool: str) -> Result:
    from agent import toolsetup

    ctx = _setup_context(f, tool)
    name, fix = f"{tool} configuration", f"governor setup {tool}"
    manifest = toolsetup.manifest_path(ctx, tool)
    variable = TOOL_URL_VARIABLES.get(tool)
    current = ctx.env.get(variable, "") if variable else ""
    if not manifest.exists():
        if current and not current.startswith(ctx.base_url):
            return Result(name, FAIL, f"{variable}={current} in this shell: {tool} goes around the agent", fix)
        return Result(name, WARN, f"not set up: start it as `governor {tool}`, or point it at the agent for good", fix)
    try:
        drifted = toolsetup.pending(tool, ctx)
        if drifted:
            return Result(name, FAIL, f"set up, but {drifted[0]} no longer points at the agent at {ctx.base_url}", fix)
    except (toolsetup.SetupError, ValueError) as exc:
        return Result(name, FAIL, str(exc), f"fix the file by hand, then `{fix}`")
    if current and not current.startswith(ctx.base_url):
        rc = toolsetup.rc_edit(ctx, tool, {}).path
        return Result(name, FAIL, f"set up, but this shell still has {variable}={current}", f"source {rc}   (or open a new shell)")
    return Result(name, OK, f"points at the agent at {ctx.base_url}")


def check_tools(f: Findings) -> Iterator[Result]:
    """Each installed coding CLI: set up by `governor setup`, and still pointing at this agent."""
    if f.settings is None:
        return
    from agent import toolsetup

    installed = [t for t in toolsetup.SETUP_TOOLS if t != "cursor" and shutil.which(t)]
    if not installed:
        yield Result("coding tools", SKIP, "none of claude, codex, gemini, opencode, aider found on PATH")
        return
    for tool in installed:
        yield _check_tool(f, tool)


CHECKS: list[Check] = [
    check_config,
    check_agent_running,
    check_port_owner,
    check_key,
    check_credentials,
    check_upstreams,
    check_control_plane,
    check_bundle,
    check_tools,
    check_keychain,
    check_data_dir,
    check_clock,
]


def run(settings: Any, settings_error: str | None = None) -> list[Result]:
    findings = Findings(settings=settings, settings_error=settings_error)
    results: list[Result] = []
    try:
        if settings is not None:
            findings.local = api.from_settings(settings, timeout=3.0)
        for check in CHECKS:
            results.extend(check(findings))
    finally:
        if findings.local is not None:
            findings.local.close()
    return results


def exit_code(results: list[Result]) -> int:
    return 1 if any(r.outcome == FAIL for r in results) else 0
