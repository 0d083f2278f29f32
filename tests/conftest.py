"""Shared fixtures: the real agent process, and the loopback fake providers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.harness import LOCAL_KEY, AgentProcess

if TYPE_CHECKING:
    from tests.fakes.providers import FakeProvider


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    """Start a real `governor run` on a free port; every one started is stopped afterwards."""
    started: list[AgentProcess] = []

    def start(
        upstream: str | None = None, env: dict[str, str] | None = None, name: str = "agent", data_dir: Path | None = None
    ) -> AgentProcess:
        agent = AgentProcess(data_dir or tmp_path / name, upstream=upstream, env=env).start()
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.kill()


@pytest.fixture(scope="module")
def shared_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """One agent for a module's read-only tests (start-up costs about a second)."""
    agent = AgentProcess(tmp_path_factory.mktemp("shared") / "agent").start()
    yield agent
    agent.kill()


@pytest.fixture
def local_key() -> str:
    return LOCAL_KEY


@pytest.fixture(scope="module")
def fake_provider() -> Iterator[FakeProvider]:
    from tests.fakes.providers import FakeProvider

    with FakeProvider() as fake:
        yield fake


@pytest.fixture(scope="module")
def governed(tmp_path_factory: pytest.TempPathFactory, fake_provider: FakeProvider) -> Iterator[AgentProcess]:
    """An agent whose three providers all point at the module's fake provider."""
    agent = AgentProcess(tmp_path_factory.mktemp("governed") / "agent", upstream=fake_provider.base_url).start()
    yield agent
    agent.kill()


@pytest.fixture
def fake(fake_provider: FakeProvider) -> Iterator[FakeProvider]:
    """The module's fake provider, cleared and reset for each test."""
    fake_provider.reset()
    fake_provider.clear()
    yield fake_provider
    fake_provider.reset()
