"""The SQLite store on real files: ledger exactness under concurrency, crash reclaim, restarts, modes."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.core.budget import BudgetLine, Identity, applicable_budgets
from agent.core.bundle import Budget
from agent.core.usage import Usage
from agent.store import MIGRATIONS, ReservationNotFound, Store, migrate

NOW = 1_796_000_000  # a fixed clock: 2026-11-29
DAY_END = NOW - NOW % 86400 + 86400
WORST = 1_000_000_000  # $1 reserved per request
WHO = Identity(vk_id="vk_1", project_id="proj_1")


def day_budget(limit_micro: int, spent_micro: int = 0, on_breach: str = "block", budget_id: str = "b_day") -> Budget:
    return Budget(id=budget_id, scope="project", scope_id="proj_1", window="day", limit_micro_usd=limit_micro,
                  spent_micro_usd=spent_micro, resets_at=DAY_END, on_breach=on_breach)  # type: ignore[arg-type]


def lines_for(*budgets: Budget, now: float = NOW) -> list[BudgetLine]:
    return applicable_budgets(list(budgets), WHO, {"anthropic"}, now)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "governor.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    s = Store.open(db_path)
    yield s
    s.close()


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


# --- files and schema --------------------------------------------------------------------


def test_file_is_0600_and_directory_0700(store: Store, db_path: Path) -> None:
    run(store.kv_set("k", "v"))
    assert stat.S_IMODE(db_path.parent.stat().st_mode) == 0o700
    for suffix in ("", "-wal", "-shm"):
        assert stat.S_IMODE(Path(f"{db_path}{suffix}").stat().st_mode) == 0o600


def test_migrations_are_idempotent(store: Store, db_path: Path) -> None:
    run(store.kv_set("kept", "yes"))
    store.close()
    again = Store.open(db_path)
    try:
        assert run(again.kv_get("kept")) == "yes"
    finally:
        again.close()
    import sqlite_utils

    db = sqlite_utils.Database(db_path)
    assert migrate(db) == migrate(db) == len(MIGRATIONS)
    strict = db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE '%STRICT'").fetchall()
    assert {"budget_totals", "reservations", "settlements", "outbox", "bundle", "kv"} <= {r[0] for r in strict}
    db.close()


# --- the request path -------------------------------------------------------------------------


def test_admit_settle_writes_ledger_history_and_outbox_together(store: Store) -> None:
    b = day_budget(limit_micro=5_000_000, spent_micro=1_000_000)
    lines = lines_for(b)
    attribution = {"project_id": "proj_1", "virtual_key_id": "vk_1", "model": "claude-sonnet-4-5"}
    result = run(store.admit("req_1", lines, WORST, attribution=attribution, now=NOW))
    assert result.admitted and result.reserved_nano == WORST
    [status] = run(store.budget_view(lines))
    assert (status.spent_micro_usd, status.reserved_micro_usd, status.remaining_micro_usd) == (1_000_000, 1_000_000, 3_000_000)

    usage = Usage(input_tokens=100, output_tokens=50, cache_read_tokens=1000, cache_write_1h_tokens=10, model="claude-sonnet-4-5-20250929")
    run(store.settle("req_1", 250_000_000, usage, client="claude-cli", provider="anthropic", duration_ms=1200, now=NOW + 1))
    run(store.settle("req_1", 250_000_000, usage, now=NOW + 2))  # idempotent
    [status] = run(store.budget_view(lines))
    assert (status.spent_micro_usd, status.reserved_micro_usd, status.pct) == (1_250_000, 0, 25)

    records = run(store.due_outbox("spend_command", now=NOW + 5))
    assert [r.payload["command"] for r in records] == ["admitSpend", "confirmSpend"]
    assert all(r.idempotency_key.startswith("req_1:") for r in records)
    confirm = records[1].payload["payload"]
    assert confirm["gateway_request_id"] == "req_1" and confirm["virtual_key_id"] == "vk_1"
    assert confirm["usage"] == {"input_tokens": 100, "output_tokens": 50, "cache_read_input_tokens": 1000,
                                "cache_creation_input_tokens": 10, "cache_creation_1h_tokens": 10, "reasoning_tokens": 0}
    assert confirm["duration_ms"] == 1200

    today = run(store.daily_spend(now=NOW))
    assert (today.total.requests, today.total.cost_nano_usd) == (1, 250_000_000)
    assert [(r.key, r.requests) for r in today.by_model] == [("claude-sonnet-4-5-20250929", 1)]
    assert [r.key for r in today.by_client] == ["claude-cli"]


def test_release_frees_the_reservation_and_enqueues_failspend(store: Store) -> None:
    lines = lines_for(day_budget(limit_micro=1_500_000))
    assert run(store.admit("req_1", lines, WORST, now=NOW)).admitted
    assert not run(store.admit("req_2", lines, WORST, now=NOW)).admitted
    run(store.release("req_1", {"type": "provider_error", "http_status": 502}, now=NOW))
    assert run(store.admit("req_2", lines, WORST, now=NOW)).admitted
    commands = [r.payload for r in run(store.due_outbox("spend_command", now=NOW))]
    fail = [c for c in commands if c["command"] == "failSpend"]
    assert fail and fail[0]["payload"]["error"] == {"type": "provider_error", "http_status": 502}
    with pytest.raises(ReservationNotFound):
        run(store.settle("never_admitted", 1, Usage(), now=NOW))


def test_block_budget_refuses_with_402_and_warn_budget_only_warns(store: Store) -> None:
    block = day_budget(limit_micro=2_500_000, spent_micro=1_000_000)
    warn = day_budget(limit_micro=1_000_000, spent_micro=900_000, on_breach="warn", budget_id="b_warn")
    lines = lines_for(block, warn)
    first = run(store.admit("a", lines, WORST, now=NOW))
    assert first.admitted and first.warning == "project:90"
    second = run(store.admit("b", lines, WORST, now=NOW))
    assert not second.admitted and second.refusal is not None
    assert second.refusal.meta["budget_id"] == "b_day" and second.refusal.http_status == 402
    assert "$0.50 left" in second.refusal.message
    # A refused request reserved nothing, on any budget.
    assert [s.reserved_micro_usd for s in run(store.budget_view(lines))] == [1_000_000, 1_000_000]


def test_rate_limits_are_counted_in_the_admit_transaction(store: Store) -> None:
    for i in range(3):
        assert run(store.admit(f"r{i}", [], 0, rate_limits={"rpm": 3}, now=NOW)).admitted
    refused = run(store.admit("r3", [], 0, rate_limits={"rpm": 3}, now=NOW + 1))
    assert refused.refusal is not None and refused.refusal.http_status == 429
    assert refused.refusal.headers["Retry-After"] == str(60 - (NOW + 1) % 60)
    assert run(store.admit("r4", [], 0, rate_limits={"rpm": 3}, now=NOW + 60)).admitted


def test_window_rolls_over_locally_and_the_bundle_spent_stays_in_its_window(store: Store) -> None:
    b = day_budget(limit_micro=2_000_000, spent_micro=1_500_000)
    run(store.apply_bundle_budgets([b], now=NOW))
    assert not run(store.admit("today", lines_for(b), WORST, now=NOW)).admitted
    tomorrow = DAY_END + 10
    assert run(store.admit("tomorrow", lines_for(b, now=tomorrow), WORST, now=tomorrow)).admitted


# --- the control plane side ------------------------------------------------------------------


def test_bundle_rule_never_drops_nor_double_counts_spend(store: Store) -> None:
    def spent() -> int:
        [s] = run(store.budget_view(lines_for(day_budget(limit_micro=100_000_000))))
        return s.spent_micro_usd

    run(store.apply_bundle_budgets([day_budget(100_000_000, spent_micro=10_000_000)], now=NOW))
    lines = lines_for(day_budget(100_000_000, spent_micro=10_000_000))
    run(store.admit("r", lines, WORST, now=NOW))
    run(store.settle("r", 5_000_000_000, Usage(output_tokens=1), now=NOW))  # $5 settled locally
    assert spent() == 15_000_000

    # Offline: the same old bundle again changes nothing.
    run(store.apply_bundle_budgets([day_budget(100_000_000, spent_micro=10_000_000)], now=NOW))
    assert spent() == 15_000_000
    # A bundle that has not seen the undelivered $5 cannot lower the count.
    run(store.apply_bundle_budgets([day_budget(100_000_000, spent_micro=12_000_000)], now=NOW))
    assert spent() == 17_000_000  # $2 from elsewhere, plus our $5 still local

    confirm = [r.id for r in run(store.due_outbox("spend_command", now=NOW)) if r.payload["command"] == "confirmSpend"]
    run(store.ack_outbox(confirm, now=NOW))
    assert spent() == 17_000_000  # delivered, not yet in the control plane's count
    run(store.apply_bundle_budgets([day_budget(100_000_000, spent_micro=14_000_000)], now=NOW))
    assert spent() == 17_000_000  # partly folded in: still counted once
    run(store.apply_bundle_budgets([day_budget(100_000_000, spent_micro=17_000_000)], now=NOW))
    assert spent() == 17_000_000  # fully folded in: not counted twice
    run(store.apply_bundle_budgets([day_budget(100_000_000, spent_micro=20_000_000)], now=NOW))
    assert spent() == 20_000_000
    run(store.apply_bundle_budgets([day_budget(100_000_000, spent_micro=0)], now=NOW))
    assert spent() == 0  # the control plane reset it


def test_restart_keeps_spend(db_path: Path) -> None:
    b = day_budget(limit_micro=3_000_000)
    first = Store.open(db_path)
    run(first.apply_bundle_budgets([b], now=NOW))
    for i in range(2):
        assert run(first.admit(f"r{i}", lines_for(b), WORST, now=NOW)).admitted
        run(first.settle(f"r{i}", WORST, Usage(output_tokens=1), now=NOW))
    first.close()

    second = Store.open(db_path)
    try:
        run(second.apply_bundle_budgets([b], now=NOW + 5))  # the stale bundle still says 0 spent
        [status] = run(second.budget_view(lines_for(b)))
        assert status.spent_micro_usd == 2_000_000
        assert run(second.admit("r2", lines_for(b), WORST, now=NOW + 5)).admitted
        assert not run(second.admit("r3", lines_for(b), WORST, now=NOW + 5)).admitted
    finally:
        second.close()


def test_outbox_defer_reject_and_counts(store: Store) -> None:
    assert run(store.enqueue("span", "span:req_1", {"name": "gen_ai.chat"}, now=NOW))
    assert not run(store.enqueue("span", "span:req_1", {"name": "gen_ai.chat"}, now=NOW))
    [rec] = run(store.due_outbox("span", now=NOW))
    run(store.defer_outbox([rec.id], "503 from control plane", next_attempt_at=NOW + 30))
    assert run(store.due_outbox("span", now=NOW + 29)) == []
    [again] = run(store.due_outbox("span", now=NOW + 30))
    assert again.attempts == 1
    run(store.reject_outbox([rec.id], "invalid_payload"))
    assert run(store.outbox_counts()) == {"span:rejected": 1}


def test_last_good_bundle_and_kv(store: Store) -> None:
    assert run(store.load_bundle()) is None
    run(store.save_bundle('{"revision": "1"}', '"1.abc"', fetched_at=NOW))
    run(store.save_bundle('{"revision": "2"}', '"2.def"', fetched_at=NOW + 1))
    saved = run(store.load_bundle())
    assert saved is not None and (saved.body, saved.etag, saved.fetched_at) == ('{"revision": "2"}', '"2.def"', NOW + 1)


# --- crash reclaim ----------------------------------------------------------------------------------


def _admit_then_die(path: str, lines: list[BudgetLine]) -> None:
    store = Store.open(Path(path))

    async def admit() -> None:
        assert (await store.admit("orphan", lines, WORST, now=NOW)).admitted
        await store.flush()

    asyncio.run(admit())
    os.kill(os.getpid(), signal.SIGKILL)  # no settle, no release, no close


def test_reclaim_after_kill_9(db_path: Path) -> None:
    b = day_budget(limit_micro=1_500_000)
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_admit_then_die, args=(str(db_path), lines_for(b)))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL
    store = Store.open(db_path)  # the dead process's lock went with it
    try:
        assert not run(store.admit("blocked", lines_for(b), WORST, now=NOW)).admitted
        assert run(store.reclaim_stale_reservations(now=NOW + 1)) == ["orphan"]
        assert run(store.admit("after", lines_for(b), WORST, now=NOW + 1)).admitted
        fail = [r.payload for r in run(store.due_outbox("spend_command", now=NOW + 1)) if r.payload["command"] == "failSpend"]
        assert [f["payload"]["gateway_request_id"] for f in fail] == ["orphan"]
        # This process's own reservations are in flight, never reclaimed.
        assert run(store.reclaim_stale_reservations(now=NOW + store.stale_after_s + 10)) == []
    finally:
        store.close()


def test_one_process_owns_the_ledger(db_path: Path) -> None:
    from agent.store import StoreInUse

    first = Store.open(db_path)
    try:
        with pytest.raises(StoreInUse, match="another Governor agent"):
            Store.open(db_path)
    finally:
        first.close()
    Store.open(db_path).close()  # free again once the owner closes


# --- exact under concurrency -------------------------------------------------------------------------
# Limit $10.50, each request reserves $1 and really costs `actual`. The ledger must never
# let spend pass the limit by more than one request's worst case, however admits interleave.

LIMIT_MICRO = 10_500_000


def _one_request(store: Store, rid: str, lines: list[BudgetLine], actual: int) -> bool:
    async def go() -> bool:
        result = await store.admit(rid, lines, WORST, now=NOW)
        if result.admitted:
            await asyncio.sleep(0)
            await store.settle(rid, actual, Usage(output_tokens=1), now=NOW)
        return result.admitted

    return asyncio.run(go())


def _assert_bound(db_path: Path, admitted: int, actual: int) -> None:
    check = Store.open(db_path)
    try:
        [status] = run(check.budget_view(lines_for(day_budget(LIMIT_MICRO))))
    finally:
        check.close()
    assert status.reserved_micro_usd == 0
    assert status.spent_micro_usd * 1000 == admitted * actual
    assert status.spent_micro_usd * 1000 <= LIMIT_MICRO * 1000 + WORST
    if actual == WORST:
        assert admitted == 10  # room for exactly ten worst cases


@pytest.mark.parametrize("actual", [WORST, WORST // 4])
def test_64_threads_never_overshoot(db_path: Path, actual: int) -> None:
    lines = lines_for(day_budget(LIMIT_MICRO))
    shared = Store.open(db_path)
    stores = [shared] * 64
    barrier = threading.Barrier(64)
    results: list[bool] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        barrier.wait()
        ok = _one_request(stores[i], f"t{i}", lines, actual)
        with lock:
            results.append(ok)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for s in set(stores):
        s.close()
    assert len(results) == 64
    _assert_bound(db_path, sum(results), actual)


def test_outbox_cap_drops_the_oldest_and_counts_them(tmp_path):
    store = Store.open(tmp_path / "cap.db")
    try:
        async def scenario() -> tuple[int, dict[str, int], list[str]]:
            for i in range(50):
                await store.enqueue("span", f"span:{i:03}", {"pad": "x" * 1000, "i": i})
            dropped = await store.cap_outbox(20_000)
            kept = [r.idempotency_key for r in await store.due_outbox("span", limit=100)]
            return dropped, {**await store.outbox_counts(), "dropped": await store.outbox_dropped()}, kept

        dropped, counts, kept = asyncio.run(scenario())
        assert 30 <= dropped <= 32
        assert counts["dropped"] == dropped and counts["span:pending"] == 50 - dropped
        assert kept == [f"span:{i:03}" for i in range(dropped, 50)]  # the newest survive
    finally:
        store.close()


def test_a_standalone_store_keeps_no_spend_outbox(tmp_path):

    store = Store.open(tmp_path / "standalone.db", spend_outbox=False)
    try:
        async def scenario() -> dict[str, int]:
            await store.admit("req_a", [], 1000)
            await store.settle("req_a", 800, Usage(input_tokens=5, output_tokens=5))
            return await store.outbox_counts()

        assert asyncio.run(scenario()) == {}
        assert asyncio.run(store.daily_spend()).total.requests == 1  # the history is still kept
    finally:
        store.close()
