"""Admission latency: admit + settle on an empty ledger vs one with 1,000,000 settled rows.

Both ledgers are real SQLite files (WAL) driven through the store's async facade, as the
budget and record addons drive it; the two run side by side in one process, in
alternating batches, so machine noise hits both alike.

    python3 -m uv run python bench/admission.py [--requests 5000] [--history 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from agent.core.budget import Identity, applicable_budgets
from agent.core.prices import estimate_input_tokens, price_for, worst_case_nano_usd
from agent.core.usage import Usage
from agent.store import HistoryRow, Store

NOW = time.time()
WHO = Identity(vk_id="vk_1", project_id="proj_1", principal_id="u_1", organization_id="org_1")
BUDGETS = [
    SimpleNamespace(id="org-month", scope="organization", scope_id="org_1", window="month", limit_micro_usd=10**12,
                    spent_micro_usd=0, resets_at=None, on_breach="block"),
    SimpleNamespace(id="proj-day", scope="project", scope_id="proj_1", window="day", limit_micro_usd=10**12,
                    spent_micro_usd=0, resets_at=None, on_breach="block"),
    SimpleNamespace(id="me-total", scope="principal", scope_id="u_1", window="total", limit_micro_usd=10**12,
                    spent_micro_usd=0, resets_at=None, on_breach="warn"),
]
QUOTE = price_for("claude-sonnet-4-5-20250929", "anthropic")
USAGE = Usage(input_tokens=1200, output_tokens=350, cache_read_tokens=40_000, cache_write_1h_tokens=800, model="claude-sonnet-4-5")


def history(n: int) -> object:
    for i in range(n):
        yield HistoryRow(f"hist-{i}", NOW - 90 * 86400 + i * (90 * 86400 / n), "claude-sonnet-4-5", "anthropic",
                         "claude-cli", USAGE, 123_456_789)


async def one_request(store: Store, rid: str, lines: list, timings: dict[str, list[float]]) -> None:
    worst = worst_case_nano_usd(estimate_input_tokens(180_000), 32_000, QUOTE)
    t0 = time.perf_counter()
    result = await store.admit(rid, lines, worst, attribution={"project_id": "proj_1"}, rate_limits={"rpm": 10**9})
    t1 = time.perf_counter()
    assert result.admitted
    await store.settle(rid, 98_765_432, USAGE, client="claude-cli", provider="anthropic")
    t2 = time.perf_counter()
    timings["admit"].append(t1 - t0)
    timings["admit+settle"].append(t2 - t0)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 10) - 1] * 1000


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--history", type=int, default=1_000_000)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="governor-bench-"))
    empty, big = Store.open(tmp / "empty" / "governor.db"), Store.open(tmp / "big" / "governor.db")
    t = time.perf_counter()
    await big.import_history(history(args.history))
    print(f"built the {args.history:,}-row ledger in {time.perf_counter() - t:.1f} s")

    lines = applicable_budgets(BUDGETS, WHO, {"anthropic"}, NOW)
    stores = {"empty": empty, f"{args.history:,} rows": big}
    timings = {name: {"admit": [], "admit+settle": []} for name in stores}
    for store in stores.values():
        await store.apply_bundle_budgets(BUDGETS)
        for i in range(200):  # warm-up: page cache, statement cache
            await one_request(store, f"warm-{i}", lines, {"admit": [], "admit+settle": []})
    batch = 250
    for start in range(0, args.requests, batch):
        for name, store in stores.items():
            for i in range(start, min(start + batch, args.requests)):
                await one_request(store, f"r-{i}", lines, timings[name])

    print(f"\n{args.requests:,} sequential requests per ledger, 3 budgets each (block, block, warn), rpm counted\n")
    print("| ledger | settled rows | admit p50 | admit p99 | admit+settle p50 | admit+settle p99 |")
    print("|---|---|---|---|---|---|")
    for name in stores:
        a, s = timings[name]["admit"], timings[name]["admit+settle"]
        rows = 0 if name == "empty" else args.history
        print(f"| {name} | {rows + args.requests + 200:,} | {pct(a, 50):.3f} ms | {pct(a, 99):.3f} ms "
              f"| {pct(s, 50):.3f} ms | {pct(s, 99):.3f} ms |")
    for store in stores.values():
        store.close()


if __name__ == "__main__":
    asyncio.run(main())
