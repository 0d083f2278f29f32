"""`governor <tool> [args…]`: make sure the agent runs, check budgets, then
replace this process with the tool (POSIX `execvpe`), so arguments, stdin,
signals and the exit code are the tool's own.

Never launches a tool un-governed: if the agent cannot be reached or started,
the tool is not started either.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from agent import client as api
from agent import statusview, wrappers

AGENT_START_TIMEOUT_S = 15.0
EXIT_BLOCKED = 2
EXIT_NO_AGENT = 3
EXIT_NOT_FOUND = 127
EXIT_UNSAFE_DIR = 4
AGENT_PID_FILE = "agent.pid"


def _err(message: str) -> None:
    print(f"governor: {message}", file=sys.stderr)


def start_agent_detached(data_dir: Path) -> subprocess.Popen[bytes]:
    """`governor run` in its own session, output to `<data_dir>/agent.log`; survives this process."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "agent.log", "ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    # So `governor doctor`, the tray and tests can find (and stop) the agent we started.
    (data_dir / AGENT_PID_FILE).write_text(f"{child.pid}\n")
    return child


def ensure_agent(local: api.LocalClient, data_dir: Path, autostart: bool = True) -> None:
    """Return once the agent answers /startupz; start it when nothing listens. Raises ClientError."""
    try:
        if local.started():
            return
        child = None
    except api.AgentNotRunning:
        if not autostart:
            raise
        print(f"governor: starting the agent in the background (log: {data_dir / 'agent.log'})", file=sys.stderr)
        child = start_agent_detached(data_dir)
    deadline = time.monotonic() + AGENT_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if child is not None and child.poll() is not None:
            raise api.ClientError(
                f"the agent exited with code {child.returncode} while starting; see {data_dir / 'agent.log'} "
                "or run `governor doctor`"
            )
        try:
            if local.started():
                return
        except api.AgentNotRunning:
            pass
        time.sleep(0.05)
    raise api.ClientError(f"the agent did not become ready within {AGENT_START_TIMEOUT_S:.0f}s; run `governor doctor`")


def blocked_message(budget: dict[str, Any]) -> str:
    return (
        f"{statusview.budget_name(budget)} is used up ({statusview.budget_line(budget)}); "
        "calls would be refused, so the tool was not started. Ask your admin to raise it, or wait for the reset."
    )


def gemini_system_settings_path(env: dict[str, str]) -> Path:
    explicit = env.get("GEMINI_CLI_SYSTEM_SETTINGS_PATH")
    if explicit:
        return Path(explicit)
    if sys.platform == "darwin":
        return Path("/Library/Application Support/GeminiCli/settings.json")
    if sys.platform == "win32":
        return Path("C:/ProgramData/gemini-cli/settings.json")
    return Path("/etc/gemini-cli/settings.json")


def shared_writable_ancestor(path: Path) -> Path | None:
    """The first directory above `path` that others may write to (sticky /tmp included).

    Gemini CLI ignores a system settings file below such a directory (someone
    else could have planted it), and then fails with "Invalid auth method".
    """
    if os.name != "posix":
        return None
    for parent in path.resolve().parents:
        try:
            if parent.stat().st_mode & 0o022:
                return parent
        except FileNotFoundError:
            continue  # made later, with the agent's private mode
        except OSError:
            return None
    return None


def _read_optional(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return None


def run_tool(tool: str, args: list[str], settings: Any) -> int:
    env = dict(os.environ)
    with api.from_settings(settings) as local:
        try:
            ensure_agent(local, Path(settings.data_dir))
            status = local.status()
        except api.ClientError as exc:
            _err(f"{exc}\nnot starting {tool} un-governed.")
            return EXIT_NO_AGENT
        gateway = wrappers.Gateway(local.base_url, local.key or "")

    blocking = wrappers.blocking_budgets(status)
    if blocking:
        for budget in blocking:
            _err(blocked_message(budget))
        return EXIT_BLOCKED

    run_dir = Path(settings.data_dir) / "run"
    existing: dict[str, str | None] = {}
    if tool == "gemini" and (unsafe := shared_writable_ancestor(run_dir / wrappers.GEMINI_SETTINGS_FILE)):
        _err(
            f"Gemini CLI would ignore the agent's settings under {unsafe} (writable by other users) and fail "
            f"with 'Invalid auth method'; give the agent a private data dir (GOVERNOR_DATA_DIR) and run again"
        )
        return EXIT_UNSAFE_DIR
    if tool == "gemini":
        own = run_dir / wrappers.GEMINI_SETTINGS_FILE
        path = gemini_system_settings_path(env)
        # A previous wrapper run's own file is not the org's settings.
        existing["gemini_system_settings"] = None if path == own else _read_optional(path)
    launch = wrappers.plan(tool, args, gateway, env, existing)

    if launch.files:
        run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name, content in launch.files.items():
            (run_dir / name).write_text(content)
    if launch.notice:
        print(launch.notice, file=sys.stderr)

    executable = shutil.which(launch.argv[0], path=env.get("PATH"))
    if executable is None:
        if tool == "cursor":
            return 0  # the instructions were the point; the app is opened by hand
        _err(f"`{launch.argv[0]}` is not on PATH; install {tool} first, then run `governor {tool}` again")
        return EXIT_NOT_FOUND
    child_env = launch.environment(env, str(run_dir))
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        os.execve(executable, launch.argv, child_env)  # never returns
    # Windows has no exec that keeps the console and exit code: wait for the child.
    return subprocess.call([executable, *launch.argv[1:]], env=child_env)
