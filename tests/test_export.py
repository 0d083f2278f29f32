"""Spend commands and spans drained from the real SQLite outbox to the loopback fake control plane."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import otlp
from agent.core.admission import spend_attribution
from agent.core.bundle import parse_bundle
from agent.core.usage import Usage
from agent.export import Exporter, agent_instance_id
from agent.store import Store
from tests.fakes.controlplane import DEFAULT_BUNDLE, FakeControlPlane

BUNDLE = parse_bundle(DEFAULT_BUNDLE)


@pytest.fixture
def cp() -> Iterator[FakeControlPlane]:
    with FakeControlPlane() as fake:
        yield fake


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "governor.db"


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def calls(store: Store, first: int, count: int, fail_every: int = 0) -> None:
    """`count` calls through the ledger as the record step does: admit, then settle or release."""
    for i in range(first, first + count):
        rid = f"req_{i}"
        attribution = spend_attribution(BUNDLE, model="claude-sonnet-4-5", request_type="chat", trace_id="ab" * 16)
        await store.admit(rid, [], 0, attribution=attribution)
        if fail_every and i % fail_every == 0:
            await store.release(rid, {"type": "provider_error", "http_status": 529})
        else:
            await store.settle(rid, 1000, Usage(input_tokens=10, output_tokens=5, model="claude-sonnet-4-5"))


def exporter(cp: FakeControlPlane, store: Store, **kw: Any) -> Exporter:
    options: dict[str, Any] = {
        "vk_provider": lambda: cp.vk_secret, "otlp_token_provider": lambda: "otlp-token-fake",
        "idle_s": 0.05, "backoff_base_s": 0.02, "backoff_cap_s": 0.1, **kw,
    }
    return Exporter(store, control_plane_url=cp.url, agent_id="gvn_test", **options)


def running(exp: Exporter, body: Callable[[], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        stop = asyncio.Event()
        task = asyncio.ensure_future(exp.run(stop))
        try:
            return await body()
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)

    return asyncio.run(main())


def pending(store: Store) -> dict[str, int]:
    return asyncio.run(store.outbox_counts())


def test_spend_in_batches_of_at_most_500_acked_after_2xx(cp: FakeControlPlane, db_path: Path) -> None:
    store = Store.open(db_path)
    asyncio.run(calls(store, 0, 300, fail_every=10))  # 600 records
    exp = exporter(cp, store)

    async def body() -> None:
        await until(lambda: len(cp.spend) == 600)

    running(exp, body)
    assert max(cp.spend_batches) <= 500 and sum(cp.spend_batches) == 600 and cp.spend_deliveries == 600
    assert pending(store) == {}
    confirm = cp.spend[("confirmSpend", "req_1")]
    assert confirm["pod_id"] == "gvn_test" and isinstance(confirm["pod_seq"], int)
    payload = confirm["payload"]
    assert payload["usage"]["input_tokens"] == 10 and payload["virtual_key_id"] == "vk_fake_ada"
    assert payload["labels"] == ["engineering", "laptop"] and payload["project_id"] == "proj_fake"
    assert cp.spend[("failSpend", "req_10")]["payload"]["error"] == {"type": "provider_error", "http_status": 529}
    headers = cp.requests_to("spend")[0].headers
    assert headers["authorization"] == f"Bearer {cp.vk_secret}" and headers["content-type"] == "application/json"
    store.close()


def test_exactly_once_across_outage_and_two_restarts(cp: FakeControlPlane, db_path: Path) -> None:
    """1,000 calls, the control plane down for half of them, the agent restarted twice."""
    for phase in range(3):
        store = Store.open(db_path)  # a restart: new store, new exporter, same file
        exp = exporter(cp, store)

        async def body(phase: int = phase, store: Store = store) -> None:
            if phase == 0:
                await calls(store, 0, 250)
                await until(lambda: len(cp.spend) >= 200)
                cp.down()
                await calls(store, 250, 250)  # offline: spooled
            elif phase == 1:
                await calls(store, 500, 250)  # still offline
                cp.up()
                await asyncio.sleep(0.05)  # restart again mid-drain
            else:
                await calls(store, 750, 250)
                await until(lambda: len(cp.spend) == 2000)

        running(exp, body)
        store.close()
    assert len(cp.spend) == 2000  # every admit and confirm of 1,000 calls, each once
    assert {rid for _, rid in cp.spend} == {f"req_{i}" for i in range(1000)}
    store = Store.open(db_path)
    assert pending(store) == {}
    store.close()


def test_per_record_rejections_are_kept_and_never_resent(cp: FakeControlPlane, db_path: Path) -> None:
    store = Store.open(db_path)
    asyncio.run(calls(store, 0, 20))
    cp.configure(reject_spend={"req_5": "unknown_model"})
    exp = exporter(cp, store)

    async def body() -> None:
        await until(lambda: len(cp.spend) == 38)
        await asyncio.sleep(0.2)

    running(exp, body)
    assert pending(store) == {"spend_command:rejected": 2}
    assert exp.stats.spend_rejected == 2 and exp.stats.rejections == {"unknown_model": 2}
    assert cp.spend_deliveries == 40  # the rejected two were sent once, not again
    store.close()


def test_a_batch_the_server_cannot_parse_is_bisected_to_the_bad_record(cp: FakeControlPlane, db_path: Path) -> None:
    store = Store.open(db_path)
    asyncio.run(calls(store, 0, 40))
    cp.configure(bad_record_ids={"req_17"})
    exp = exporter(cp, store)

    async def body() -> None:
        await until(lambda: len(cp.spend) == 78)
        while (await store.outbox_counts()).get("spend_command:rejected") != 2:
            await asyncio.sleep(0.01)

    running(exp, body)
    assert ("admitSpend", "req_17") not in cp.spend
    assert exp.stats.rejections == {"bad_request": 2}
    store.close()


def test_5xx_and_slowness_retry_with_backoff(cp: FakeControlPlane, db_path: Path) -> None:
    store = Store.open(db_path)
    asyncio.run(calls(store, 0, 5))
    cp.configure(fail_times={"spend": 3}, delay={"spend": 0.2})
    exp = exporter(cp, store)

    async def body() -> None:
        await until(lambda: len(cp.spend) == 10)

    running(exp, body)
    assert cp.count("spend") >= 4 and cp.max_inflight["spend"] == 1
    assert "spend HTTP 500" in (exp.stats.last_error or "")
    store.close()


def _span_record(i: int, **kw: Any) -> dict[str, Any]:
    return otlp.build_span(
        trace_id="ab" * 16, span_id=f"{i:016x}", parent_span_id="cd" * 8, request_id=f"req_{i}", dialect="openai_chat",
        provider="openai", request_model="gpt-5", response_model="gpt-5-2025-08-07", start_ns=10**18, end_ns=10**18 + 5,
        usage=Usage(input_tokens=3, output_tokens=4), cost_micro_usd=12, client="aider/0.86", status_code=200,
        project_id=BUNDLE.project_id, virtual_key_id=BUNDLE.vk_id, labels=BUNDLE.vk_tags, **kw,
    )


def test_spans_reach_the_otlp_receiver_with_the_project_token(cp: FakeControlPlane, db_path: Path) -> None:
    store = Store.open(db_path)

    async def enqueue() -> None:
        for i in range(30):
            await store.enqueue("span", f"span:req_{i}", _span_record(i))

    asyncio.run(enqueue())
    token = {"value": "wrong-token"}
    exp = Exporter(store, control_plane_url=cp.url, agent_id="gvn_test", otlp_token_provider=lambda: token["value"],
                   idle_s=0.05, backoff_base_s=0.02, backoff_cap_s=0.1, span_batch=16)

    async def body() -> None:
        await until(lambda: cp.count("traces") >= 2)  # 401: the spans wait for a better token
        assert cp.spans == [] and await store.outbox_counts() == {"span:pending": 30}
        token["value"] = "otlp-token-fake"
        await until(lambda: len(cp.spans) == 30)

    running(exp, body)
    assert pending(store) == {}
    span = cp.spans[0]
    assert span["name"] == "gen_ai.chat" and span["parent_span_id"] == "cd" * 8
    assert span["attributes"]["langwatch.gateway_request_id"] == "req_0"
    assert span["attributes"]["gen_ai.request.model"] == "openai/gpt-5"
    assert cp.resources[0]["service.name"] == "governor"
    req = cp.requests_to("traces")[-1]
    assert req.headers["x-auth-token"] == "otlp-token-fake" and "authorization" not in req.headers
    store.close()


def test_spans_also_go_to_an_extra_collector_and_are_dropped_without_a_trace_project(
    cp: FakeControlPlane, db_path: Path
) -> None:
    store = Store.open(db_path)
    asyncio.run(store.enqueue("span", "span:req_1", _span_record(1)))
    with FakeControlPlane(bundle={**DEFAULT_BUNDLE, "project_otlp_token": "org-collector"}) as collector:
        exp = exporter(cp, store, extra_otlp_url=collector.url + "/api/otel/v1/traces",
                       extra_otlp_headers={"X-Auth-Token": "org-collector"})

        async def body() -> None:
            await until(lambda: len(cp.spans) == 1 and len(collector.spans) == 1)

        running(exp, body)
    none = exporter(cp, store, otlp_token_provider=lambda: "")
    asyncio.run(store.enqueue("span", "span:req_2", _span_record(2)))

    async def drop() -> None:
        while await store.outbox_counts():
            await asyncio.sleep(0.01)

    running(none, drop)
    assert none.stats.spans_dropped == 1 and len(cp.spans) == 1
    store.close()


def test_attribution_and_instance_id(tmp_path: Path) -> None:
    a = spend_attribution(BUNDLE, model="m", request_type="chat", metadata={"k": "v" * 5000})
    assert a["metadata"] == "{}" and a["organization_id"] == "org_fake" and a["outcome_carries_attribution"]
    assert agent_instance_id(tmp_path) == agent_instance_id(tmp_path)
