"""Runs the real agent (`governor run`) as a child process on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import httpx

LOCAL_KEY = "gvn-test-local-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AgentProcess:
    def __init__(self, data_dir: Path, upstream: str | None = None, env: dict[str, str] | None = None):
        self.port = free_port()
        self.data_dir = data_dir
        self.log_path = data_dir / "agent.log"
        self.env = {
            **os.environ,
            "GOVERNOR_LISTEN": f"127.0.0.1:{self.port}",
            "GOVERNOR_DATA_DIR": str(data_dir),
            "GOVERNOR_LOCAL_KEY": LOCAL_KEY,
            "GOVERNOR_CONFIG": str(data_dir / "config.toml"),
            "GOVERNOR_LOG_DIR": str(data_dir / "logs"),  # the agent's own log file (stdout/stderr go to log_path)
            "GOVERNOR_DRAIN_PRE_WAIT_S": "0.2",
        }
        if upstream:
            for provider in ("ANTHROPIC", "OPENAI", "GEMINI"):
                self.env[f"GOVERNOR_{provider}_BASE_URL"] = upstream
                self.env[f"GOVERNOR_{provider}_API_KEY"] = f"sk-upstream-{provider.lower()}"
        self.env.update(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> AgentProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._close_log()
        self._log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run"], env=self.env, stdout=self._log_file, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.base_url + "/startupz", timeout=0.5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"agent did not start within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close_log()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> AgentProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def governor(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`governor <args>` as a person would run it, in `env` (an agent's, to talk to that agent)."""
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], env=env, capture_output=True, text=True, timeout=timeout)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, step: float = 0.05, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy, and return that; TimeoutError after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError(f"{what} not met within {timeout}s")
