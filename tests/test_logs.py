"""The agent's log file and `governor logs [--follow] [-n N]`, against a real agent."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from agent import logs
from tests.harness import LOCAL_KEY, AgentProcess, governor


def wait_for(predicate, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_agent_writes_a_private_log_file_that_governor_logs_prints(tmp_path: Path) -> None:
    with AgentProcess(tmp_path / "agent") as agent:
        path = Path(agent.env["GOVERNOR_LOG_DIR"]) / logs.LOG_FILE
        wait_for(lambda: path.exists() and "gateway_started" in path.read_text())
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        httpx.get(agent.base_url + "/_governor/v1/status", headers={"authorization": "Bearer wrong-key-not-logged"})

        printed = governor(agent.env, "logs", "-n", "1")
        assert printed.returncode == 0, printed.stderr
        assert len(printed.stdout.splitlines()) == 1
        every = governor(agent.env, "logs", "-n", "1000").stdout
        assert 'INFO msg="gateway_started"' in every and LOCAL_KEY not in every

        follower = subprocess.Popen([sys.executable, "-m", "agent.cli", "logs", "--follow", "-n", "0"], env=agent.env,
                                    stdout=subprocess.PIPE, text=True)
        try:
            time.sleep(1.5)  # the follower is at the end of the file
            agent.signal(__import__("signal").SIGTERM)  # the agent logs its drain and stop
            assert follower.stdout is not None
            seen = [follower.stdout.readline() for _ in range(2)]
            assert any("gateway_draining" in line for line in seen), seen
        finally:
            follower.terminate()
            follower.wait(10)
            if follower.stdout is not None:
                follower.stdout.close()
    assert "gateway_stopped" in path.read_text()


def test_logs_reads_without_mitmproxy(tmp_path: Path) -> None:
    (tmp_path / logs.LOG_FILE).write_text('2026-01-01T00:00:00 INFO msg="hello" a=1\n')
    code = (
        "import sys; from agent.cli import main; rc = main(['logs']); "
        "assert 'mitmproxy' not in sys.modules, 'mitmproxy imported'; sys.exit(rc)"
    )
    env = {**os.environ, "GOVERNOR_LOG_DIR": str(tmp_path), "GOVERNOR_CONFIG": str(tmp_path / "none.toml")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == '2026-01-01T00:00:00 INFO msg="hello" a=1\n'


def test_no_log_yet_says_where_it_will_be(tmp_path: Path) -> None:
    env = {**os.environ, "GOVERNOR_LOG_DIR": str(tmp_path / "none"), "GOVERNOR_CONFIG": str(tmp_path / "none.toml")}
    result = governor(env, "logs")
    assert result.returncode == 1 and str(tmp_path / "none") in result.stderr and "governor run" in result.stderr


@pytest.fixture
def small_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(logs, "MAX_BYTES", 400)
    monkeypatch.setattr(logs, "FOLLOW_POLL_S", 0.01)
    logger = logging.getLogger()
    before = list(logger.handlers)
    path = logs.add_file(tmp_path / "logs" / logs.LOG_FILE)
    assert path is not None
    yield path, logging.getLogger("governor.test")
    for handler in logger.handlers[:]:
        if handler not in before:
            logger.removeHandler(handler)
            handler.close()


def test_rotation_keeps_files_private_and_tail_and_follow_span_it(small_log) -> None:  # type: ignore[no-untyped-def]
    path, log = small_log
    log.warning("first_event n=0")
    stop = threading.Event()
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(logs.follow(path, stop=stop.is_set)), daemon=True)
    reader.start()
    time.sleep(0.2)
    for n in range(1, 21):  # ~70 bytes a line: several rotations at 400 bytes
        log.warning("event n=%d", n)
        time.sleep(0.02)
    wait_for(lambda: any("n=20" in line for line in seen))
    stop.set()
    reader.join(5)
    numbers = [int(line.rsplit("n=", 1)[1]) for line in seen if "n=" in line]
    assert numbers == list(range(1, 21))  # every line once, in order, across the renames
    backups = sorted(path.parent.glob(logs.LOG_FILE + ".*"))
    assert backups and len(backups) <= logs.BACKUPS
    for file in [path, *backups]:
        assert stat.S_IMODE(os.stat(file).st_mode) == 0o600
    last = logs.tail(path, 8)
    assert [int(line.rsplit("n=", 1)[1]) for line in last] == list(range(13, 21))
