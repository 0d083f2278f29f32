"""The local API's route table and handlers, called without mitmproxy."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from agent import localapi
from agent.config import Settings
from agent.core.bundle import parse_bundle
from agent.daemon import build_state
from agent.store import Store
from tests.harness import LOCAL_KEY


def test_route_table_is_sorted():
    assert list(localapi.ROUTES) == sorted(localapi.ROUTES)


def test_every_api_route_needs_the_key():
    for path, route in localapi.ROUTES.items():
        assert route.needs_key == path.startswith(localapi.API_PREFIX), path


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_status_reports_budgets_and_bundle(tmp_path: Path):
    store = Store.open(tmp_path / "governor.db")
    try:
        state = build_state(Settings(data_dir=tmp_path, local_key=LOCAL_KEY), store)
        code, body = run(localapi.status(state))
        assert code == 200 and body["governed"] is False and body["budgets"] == []
        bundle = parse_bundle({"budgets": [{"id": "b", "scope": "project", "scope_id": "p", "window": "total",
                                            "limit_micro_usd": 2_000_000, "spent_micro_usd": 500_000, "on_breach": "block"}]})
        state.set_bundle(bundle, "file:test")
        run(store.apply_bundle_budgets(bundle.budgets))
        code, body = run(localapi.status(state))
        budget = body["budgets"][0]
        assert (budget["limit_usd"], budget["spent_usd"], budget["remaining_usd"], budget["window"]) == (2.0, 0.5, 1.5, "total")
        assert body["governed"] is True and body["bundle"]["source"] == "file:test"
    finally:
        store.close()


def test_sync_now_on_a_standalone_agent_says_why_not(shared_agent):
    r = httpx.post(shared_agent.base_url + "/_governor/v1/sync", headers={"authorization": f"Bearer {LOCAL_KEY}"})
    assert r.status_code == 409 and "standalone" in r.json()["reason"]
    assert httpx.post(shared_agent.base_url + "/_governor/v1/sync").status_code == 401
