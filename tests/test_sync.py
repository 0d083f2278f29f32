"""Bundle sync against the loopback fake control plane, with the real SQLite store."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.core.bundle import Bundle, parse_bundle
from agent.store import Store
from agent.sync import Backoff, BundleSync, key_refusal, stale_verdict
from tests.fakes.controlplane import FakeControlPlane


@pytest.fixture
def cp() -> Iterator[FakeControlPlane]:
    with FakeControlPlane() as fake:
        yield fake


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "governor.db")
    yield s
    s.close()


class Agent:
    """What the daemon wires to BundleSync: the current bundle and the revocation flag."""

    def __init__(self) -> None:
        self.bundles: list[tuple[Bundle, str, float]] = []
        self.revoked: list[str | None] = []

    def on_bundle(self, bundle: Bundle, source: str, at: float) -> None:
        self.bundles.append((bundle, source, at))

    async def on_revoked(self, code: str | None) -> None:  # async callbacks work too
        self.revoked.append(code)

    @property
    def bundle(self) -> Bundle | None:
        return self.bundles[-1][0] if self.bundles else None


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> float:
    """Wait until `predicate()`; return how long it took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


def with_sync(
    cp: FakeControlPlane, store: Store, body: Callable[[BundleSync, Agent], Awaitable[Any]], **kw: Any
) -> Agent:
    agent = Agent()

    async def main() -> None:
        sync = BundleSync(
            cp.url, store, vk_provider=lambda: cp.vk_secret, on_bundle=agent.on_bundle, on_revoked=agent.on_revoked,
            **{"backoff_base_s": 0.05, "backoff_cap_s": 0.2, **kw},
        )
        stop = asyncio.Event()
        task = asyncio.ensure_future(sync.run(stop))
        try:
            await body(sync, agent)
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)

    asyncio.run(main())
    return agent


def test_fetch_then_revalidate_with_etag_and_persist(cp: FakeControlPlane, store: Store) -> None:
    async def body(sync: BundleSync, agent: Agent) -> None:
        await until(lambda: len(agent.bundles) >= 3)

    agent = with_sync(cp, store, body, revalidate_s=0.1)
    first, *rest = cp.requests_to("bundle")
    assert first.headers["authorization"] == f"Bearer {cp.vk_secret}"
    assert "if-none-match" not in first.headers
    assert all(r.headers["if-none-match"] == cp.etag() for r in rest)  # 304s from then on
    assert [src for _, src, _ in agent.bundles] == ["control_plane"] * len(agent.bundles)
    assert agent.bundle is not None and agent.bundle.vk_id == "vk_fake_ada"
    saved = asyncio.run(store.load_bundle())
    assert saved is not None and saved.etag == cp.etag() and json.loads(saved.body)["revision"] == "1"


def test_long_poll_revocation_lands_within_seconds(cp: FakeControlPlane, store: Store) -> None:
    async def body(sync: BundleSync, agent: Agent) -> None:
        await until(lambda: agent.bundle is not None)
        await until(lambda: cp.inflight.get("changes", 0) == 1)  # the long-poll is parked on the server
        cp.revoke()
        took = await until(lambda: "virtual_key_revoked" in agent.revoked)
        assert took < 3.0, took  # revalidate_s is 25: only the feed can have done this
        assert key_refusal(agent.bundle, sync.status.revoked, time.time()) == "virtual_key_revoked"

    with_sync(cp, store, body, revalidate_s=25)


def test_revocation_without_the_long_poll_comes_with_revalidation(cp: FakeControlPlane, store: Store) -> None:
    cp.configure(fail={"changes": 500})

    async def body(sync: BundleSync, agent: Agent) -> None:
        await until(lambda: agent.bundle is not None)
        cp.revoke(emit=False)
        took = await until(lambda: "virtual_key_revoked" in agent.revoked)
        assert took < 1.5, took  # within one revalidation interval (30 s in production)

    with_sync(cp, store, body, revalidate_s=0.5)


def test_revocation_is_persisted_and_survives_an_offline_restart(cp: FakeControlPlane, store: Store) -> None:
    async def revoke(sync: BundleSync, agent: Agent) -> None:
        await until(lambda: agent.bundle is not None)
        cp.revoke()
        await until(lambda: agent.revoked == ["virtual_key_revoked"])

    with_sync(cp, store, revoke)
    cp.down()

    async def offline(sync: BundleSync, agent: Agent) -> None:
        await until(lambda: agent.bundles and agent.revoked)

    agent = with_sync(cp, store, offline)
    assert agent.bundles[0][1] == "store" and agent.revoked == ["virtual_key_revoked"]
    assert key_refusal(agent.bundle, None, time.time()) == "virtual_key_revoked"  # the saved bundle says so too


def test_reinstated_key_clears_the_refusal(cp: FakeControlPlane, store: Store) -> None:
    async def body(sync: BundleSync, agent: Agent) -> None:
        await until(lambda: agent.bundle is not None)
        cp.revoke()
        await until(lambda: agent.revoked == ["virtual_key_revoked"])
        cp.reinstate()
        await until(lambda: agent.revoked == ["virtual_key_revoked", None])
        assert agent.bundle is not None and agent.bundle.status == "active"

    with_sync(cp, store, body, revalidate_s=25)


def test_config_and_budget_changes_refetch_at_once(cp: FakeControlPlane, store: Store) -> None:
    async def body(sync: BundleSync, agent: Agent) -> None:
        await until(lambda: agent.bundle is not None)
        await until(lambda: cp.inflight.get("changes", 0) == 1)
        cp.update_bundle(models_allowed=["claude-*"])
        await until(lambda: agent.bundle.models_allowed == ["claude-*"], timeout=3)  # type: ignore[union-attr]
        cp.update_bundle(kind="BUDGET_UPDATED", budgets=[{
            "id": "b1", "scope": "project", "scope_id": "proj_fake", "window": "month",
            "limit_micro_usd": 10_000_000, "spent_micro_usd": 5, "resets_at": 1900000000}])
        await until(lambda: len(agent.bundle.budgets) == 1, timeout=3)  # type: ignore[union-attr]
        assert sync.status.changes_revision == str(cp.feed_revision)

    with_sync(cp, store, body, revalidate_s=25)


def test_changes_for_other_keys_do_not_revoke(cp: FakeControlPlane, store: Store) -> None:
    async def body(sync: BundleSync, agent: Agent) -> None:
        await until(lambda: agent.bundle is not None)
        cp.emit("VK_REVOKED", virtual_key_id="vk_someone_else")
        await until(lambda: sync.status.changes_revision == str(cp.feed_revision))
        await asyncio.sleep(0.1)
        assert agent.revoked == []

    with_sync(cp, store, body, revalidate_s=25)


def test_invalid_bundle_keeps_the_last_good_one(cp: FakeControlPlane, store: Store) -> None:
    async def body(sync: BundleSync, agent: Agent) -> None:
        await until(lambda: agent.bundle is not None)
        cp.configure(malformed={"bundle"})
        cp.update_bundle(models_allowed=["gpt-*"])
        await until(lambda: sync.status.invalid_bundles >= 1)
        cp.reset_knobs()
        cp.update_bundle(policy_rules={"tools": {"deny": ["(unclosed"]}})  # invalid RE2: refused, field named
        await until(lambda: sync.status.invalid_bundles >= 2)
        assert "policy_rules.tools.deny[0]" in (sync.status.last_error or "")
        assert agent.bundle is not None and agent.bundle.revision == "1"
        assert sync.status.connected is False

    with_sync(cp, store, body, revalidate_s=0.2)
    assert json.loads(asyncio.run(store.load_bundle()).body)["revision"] == "1"  # type: ignore[union-attr]


def test_a_304_for_a_bundle_we_do_not_hold_is_asked_again_in_full(cp: FakeControlPlane, store: Store) -> None:
    cp.configure(wrong_etag=True)

    async def body(sync: BundleSync, agent: Agent) -> None:
        await until(lambda: cp.count("bundle") >= 2)
        assert agent.bundle is None
        cp.reset_knobs()
        await until(lambda: agent.bundle is not None)

    with_sync(cp, store, body, revalidate_s=25)
    assert all("if-none-match" not in r.headers for r in cp.requests_to("bundle"))


def test_unreachable_then_back_and_5xx_back_off(cp: FakeControlPlane, store: Store) -> None:
    async def body(sync: BundleSync, agent: Agent) -> None:
        await until(lambda: agent.bundle is not None)
        cp.down()
        await until(lambda: not sync.status.connected)
        assert "unreachable" in (sync.status.last_error or "")
        cp.up()
        cp.configure(fail_times={"bundle": 3})
        await until(lambda: sync.status.connected and cp.count("bundle") >= 5)

    with_sync(cp, store, body, revalidate_s=0.2)


def test_one_request_in_flight_per_endpoint_and_a_slow_plane_never_stalls_the_loop(
    cp: FakeControlPlane, store: Store
) -> None:
    cp.configure(delay={"bundle": 0.5})

    async def body(sync: BundleSync, agent: Agent) -> None:
        worst_gap = 0.0
        last = time.monotonic()
        deadline = last + 1.6
        while time.monotonic() < deadline:
            sync.poke()
            await asyncio.sleep(0.005)
            now = time.monotonic()
            worst_gap, last = max(worst_gap, now - last), now
        assert worst_gap < 0.25, worst_gap  # the event loop kept turning while the plane was slow

    with_sync(cp, store, body, revalidate_s=0.01)
    assert cp.max_inflight["bundle"] == 1 and cp.max_inflight["changes"] == 1


def test_rotation_remints_then_refetches(cp: FakeControlPlane, store: Store) -> None:
    rotated: list[str] = []

    async def on_rotated() -> None:
        cp.vk_secret = "vk-lw-rotated00000000000000"
        rotated.append(cp.vk_secret)

    agent = Agent()

    async def main() -> None:
        sync = BundleSync(cp.url, store, vk_provider=lambda: cp.vk_secret, on_bundle=agent.on_bundle,
                          on_revoked=agent.on_revoked, on_rotated=on_rotated, revalidate_s=25)
        stop = asyncio.Event()
        task = asyncio.ensure_future(sync.run(stop))
        await until(lambda: agent.bundle is not None)
        cp.update_bundle(kind="VK_ROTATED")
        await until(lambda: any(r.headers.get("authorization") == "Bearer vk-lw-rotated00000000000000"
                                for r in cp.requests_to("bundle")))
        await until(lambda: agent.bundle.revision == "2")  # type: ignore[union-attr]
        stop.set()
        await task

    asyncio.run(main())
    assert rotated and agent.revoked == []


# -- the pure decisions --------------------------------------------------------------


def test_stale_verdict() -> None:
    b = parse_bundle({"max_stale_s": 100, "on_stale": "fail_closed"})
    assert stale_verdict(b, 1000.0, 1100.0) == "fresh"
    assert stale_verdict(b, 1000.0, 1100.5) == "stale_closed"
    assert stale_verdict(parse_bundle({"max_stale_s": 100}), 1000.0, 2000.0) == "stale_open"
    assert stale_verdict(parse_bundle({}), 0.0, 1e12) == "fresh"  # max_stale_s null: never stale
    assert stale_verdict(b, None, 1e12) == "fresh"  # a file bundle is never stale


def test_key_refusal() -> None:
    assert key_refusal(None, None, 0) is None
    assert key_refusal(parse_bundle({}), "virtual_key_disabled", 0) == "virtual_key_disabled"
    assert key_refusal(parse_bundle({"status": "revoked"}), None, 0) == "virtual_key_revoked"
    assert key_refusal(parse_bundle({"expires_at": 100}), None, 99.9) is None
    assert key_refusal(parse_bundle({"expires_at": 100}), None, 100) == "virtual_key_expired"


def test_backoff_is_jittered_and_capped() -> None:
    b = Backoff(base=1, cap=8, rng=random.Random(7))
    delays = [b.next_delay() for _ in range(20)]
    assert all(0 < d <= 8 for d in delays) and len(set(delays)) > 10
    assert max(delays[:1]) <= 1
    b.reset()
    assert b.next_delay() <= 1
