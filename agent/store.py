"""The agent's SQLite store: budget ledger, spend history, outbox, last good bundle.

The only module that writes SQL. Rows are dicts in here and leave as dataclasses.

Threads. One writer thread owns the write connection; every write is a
function queued to it, and the async facade (`await store.settle(...)`) waits
on a future, so the proxy's event loop never blocks on SQLite (the idea of
Datasette's `_execute_writes`). Reads for the spend view run in worker threads
on their own read-only connections.

Admission is decided in memory. The store keeps a mirror of the running
totals (and of the rate counters), and `admit` checks and reserves on it under
a lock, then queues the ledger write without waiting for it: the decision is
exact under any concurrency inside the agent, and costs microseconds on the
request path instead of a thread hand-off and a transaction. That is only
right while one process owns the ledger, so `Store.open` takes an exclusive
lock on the file (a second agent on the same data dir is refused). The
queued write lands within milliseconds; a crash in between loses that one
reservation, which a restart would have released anyway.

Durability: WAL with `synchronous=NORMAL`. A committed transaction survives
`kill -9` of the agent; a power cut may lose the last few commits (the price of
sub-millisecond admission without an fsync per request).

The ledger. For each budget and window (`budget_totals`, keyed by budget id
and window start), four running totals in nano-USD:

    spent_acked      the control plane's `spent` for that window (last bundle)
    delivered        settled here and accepted by the control plane, but not
                     (yet) visible in a bundle's `spent`
    settled_unacked  settled here, not yet accepted by the control plane
    reserved         worst cases of requests still in flight

Admission reads one row per budget, never a sum over history, so its cost does
not grow with the number of past requests. A request moves through them:
`admit` adds its worst case to `reserved`; `settle` moves it out of `reserved`
and adds the real cost to `settled_unacked`; `ack_outbox` (the control plane
accepted the confirmSpend) moves the cost to `delivered`; a later bundle
absorbs `delivered` into `spent_acked`.

The bundle rule (`apply_bundle_budgets`), per budget, for the window the
bundle counted (S = its `spent`, B = `spent_acked`, D = `delivered`):

- S ≥ B (the control plane's count moved forward or stayed): the acknowledged
  part becomes max(S, B + D); that is, B := S and D := max(0, B + D − S).
  Spend the control plane accepted is never dropped while it is still being
  folded into its count, and never counted twice once it is. Spend other
  laptops added to S is taken as is.
- S < B (the control plane reset or corrected the budget): B := S, D := 0.
- `settled_unacked` is never touched by a bundle: the control plane cannot
  have counted what it has not accepted. So neither going offline (no new
  bundle) nor a restart (everything is in this file) lowers spend.

Crash safety: a reservation records the writer's boot id, pid and the host's
boot id. `reclaim_stale_reservations` (at start-up) releases reservations of
an earlier boot whose process is gone, or that are older than
`stale_after_s`, and enqueues a failSpend for each, so `kill -9` never leaves a
reservation blocking a budget forever.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import json
import logging
import os
import queue
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from agent.core.budget import (
    NANO_PER_MICRO,
    BudgetLine,
    BudgetSpec,
    Totals,
    bundle_window,
    check_rate_limits,
    current_window,
    decide_admission,
    percent_used,
    provider_filter,
    rate_windows,
)
from agent.core.errors import GatewayError
from agent.core.usage import Usage

log = logging.getLogger("governor.store")

T = TypeVar("T")

SCHEMA = """
CREATE TABLE budget_totals (
    budget_id TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    window_end INTEGER,
    scope TEXT NOT NULL,
    window TEXT NOT NULL,
    on_breach TEXT NOT NULL,
    provider TEXT,
    limit_nano INTEGER NOT NULL,
    spent_acked_nano INTEGER NOT NULL DEFAULT 0,
    delivered_nano INTEGER NOT NULL DEFAULT 0,
    settled_unacked_nano INTEGER NOT NULL DEFAULT 0,
    reserved_nano INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    PRIMARY KEY (budget_id, window_start)
) STRICT;

CREATE TABLE reservations (
    request_id TEXT PRIMARY KEY,
    amount_nano INTEGER NOT NULL,
    windows TEXT NOT NULL,          -- JSON [[budget_id, window_start], ...]
    attribution TEXT NOT NULL,      -- JSON, repeated in confirmSpend / failSpend
    created_at REAL NOT NULL,
    pid INTEGER NOT NULL,
    boot_id TEXT NOT NULL,
    host_boot_id TEXT NOT NULL
) STRICT;

CREATE TABLE settlements (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE,
    ts REAL NOT NULL,
    day TEXT NOT NULL,              -- local calendar day of ts, for the daily view
    outcome TEXT NOT NULL,          -- confirmed | failed
    model TEXT,
    provider TEXT,
    client TEXT,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    cost_nano INTEGER NOT NULL,
    priced_by_fallback INTEGER NOT NULL
) STRICT;
CREATE INDEX settlements_by_day ON settlements (day);

CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,             -- spend_command | span
    idempotency_key TEXT NOT NULL UNIQUE,
    payload TEXT NOT NULL,          -- JSON
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',  -- pending | rejected
    last_error TEXT,
    ledger_nano INTEGER NOT NULL DEFAULT 0,  -- cost to move to `delivered` on ack
    ledger_windows TEXT NOT NULL DEFAULT '[]'
) STRICT;
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);

CREATE TABLE rate_counters (
    kind TEXT NOT NULL,             -- rpm | rpd
    window_start INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (kind, window_start)
) STRICT;

CREATE TABLE bundle (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    body TEXT NOT NULL,
    etag TEXT,
    fetched_at REAL NOT NULL
) STRICT;

CREATE TABLE kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
"""


def _migration_1_initial(db: sqlite_utils.Database) -> None:
    for statement in SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)


# Append only: each entry runs once, in its own transaction, in order.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_migration_1_initial]


# --- what leaves the store ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdmitResult:
    admitted: bool
    refusal: GatewayError | None = None  # 402 budget_exceeded or 429 rate_limited
    warning: str | None = None  # X-Langwatch-Budget-Warning value
    reserved_nano: int = 0


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    id: int
    kind: str
    idempotency_key: str
    payload: dict[str, Any]
    created_at: float
    attempts: int


@dataclass(frozen=True, slots=True)
class StoredBundle:
    body: str
    etag: str | None
    fetched_at: float


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    budget_id: str
    scope: str
    window: str
    on_breach: str
    provider: str | None
    limit_micro_usd: int
    spent_micro_usd: int
    reserved_micro_usd: int
    remaining_micro_usd: int
    window_end: int | None
    pct: int


@dataclass(frozen=True, slots=True)
class SpendRow:
    key: str
    requests: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_nano_usd: int


@dataclass(frozen=True, slots=True)
class DailySpend:
    day: str
    total: SpendRow
    by_model: list[SpendRow] = field(default_factory=list)
    by_client: list[SpendRow] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One settled request as the history (daily view) keeps it."""

    request_id: str
    ts: float
    model: str | None
    provider: str | None
    client: str | None
    usage: Usage
    cost_nano: int
    outcome: str = "confirmed"
    priced_by_fallback: bool = False


class StoreInUse(RuntimeError):
    """Another process holds this ledger (a second agent on the same data dir)."""


class ReservationNotFound(LookupError):
    """settle/release for a request that was never admitted here (or was reclaimed)."""


# --- the store -------------------------------------------------------------------


class Store:
    """`Store.open(path)` once per process; `await` its methods from the event loop."""

    def __init__(self, path: Path, *, stale_after_s: float = 3600.0, spend_outbox: bool = True) -> None:
        self.path = Path(path)
        # Spend commands are only worth writing when a control plane will read them:
        # a standalone agent keeps its ledger and history, and no outbox of them.
        self.spend_outbox = spend_outbox
        self.boot_id = uuid.uuid4().hex  # this process's life, recorded on each reservation
        self.pid = os.getpid()
        self.host_boot_id = _host_boot_id()
        self.stale_after_s = stale_after_s
        self._queue: queue.SimpleQueue[tuple[Callable[[sqlite_utils.Database], Any], concurrent.futures.Future[Any]] | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._readers = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()
        # The admission mirror (see the module doc): (budget_id, window_start) ->
        # [spent_acked, delivered, settled_unacked, reserved]; rate counters;
        # this process's reservations: request_id -> (amount, windows).
        self._lock = threading.Lock()
        self._totals: dict[tuple[str, int], list[int]] = {}
        self._rates: dict[tuple[str, int], int] = {}
        self._held: dict[str, tuple[int, list[tuple[str, int]]]] = {}
        self._lock_file: Any = None

    @classmethod
    def open(cls, path: Path | str, *, stale_after_s: float = 3600.0, spend_outbox: bool = True) -> Store:
        """Create the directory (0700) and file (0600), migrate, start the writer thread."""
        store = cls(Path(path), stale_after_s=stale_after_s, spend_outbox=spend_outbox)
        _prepare_files(store.path)
        store._lock_file = _exclusive_lock(store.path)
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        store._writer = threading.Thread(target=store._write_loop, args=(ready,), name="governor-store-writer", daemon=True)
        store._writer.start()
        ready.result()  # re-raises a failed migration here, at start-up
        return store

    def close(self) -> None:
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join()
            self._writer = None
        with self._reader_lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()
        if self._lock_file is not None:
            self._lock_file.close()  # releases the lock
            self._lock_file = None

    # -- plumbing

    def _write_loop(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            db = sqlite_utils.Database(_connect(self.path))
            db.spend_outbox = self.spend_outbox  # type: ignore[attr-defined]  # read by _enqueue_spend
            db.execute("PRAGMA journal_mode=WAL")
            migrate(db)
            self._load_mirror(db)
        except BaseException as e:  # noqa: BLE001 - handed to the opener, which re-raises
            ready.set_exception(e)
            return
        ready.set_result(None)
        closing = False
        while not closing and (item := self._queue.get()) is not None:
            batch = [item]
            while len(batch) < WRITE_BATCH:
                try:
                    queued = self._queue.get_nowait()
                except queue.Empty:
                    break
                if queued is None:
                    closing = True
                    break
                batch.append(queued)
            _commit_batch(db, batch)
        db.close()

    def _load_mirror(self, db: sqlite_utils.Database) -> None:
        totals = {
            (str(r[0]), int(r[1])): [int(r[2]), int(r[3]), int(r[4]), int(r[5])]
            for r in db.execute(
                "SELECT budget_id, window_start, spent_acked_nano, delivered_nano, settled_unacked_nano, reserved_nano FROM budget_totals"
            )
        }
        rates = {(str(r[0]), int(r[1])): int(r[2]) for r in db.execute("SELECT kind, window_start, count FROM rate_counters")}
        with self._lock:
            self._totals, self._rates = totals, rates

    def _submit(self, fn: Callable[[sqlite_utils.Database], Any]) -> None:
        """Queue a write without waiting for it; a failure is logged (the mirror already moved on)."""
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        fut.add_done_callback(lambda f: f.exception() and log.error("ledger_write_failed error=%r", f.exception()))
        self._queue.put((fn, fut))

    async def flush(self) -> None:
        """Wait until every write queued so far is committed."""
        await self._write(lambda db: None)

    async def _write(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        if self._writer is None:
            raise RuntimeError("the store is closed; open it with Store.open(path)")
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put((fn, fut))
        return await asyncio.wrap_future(fut)

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._readers, "conn", None)
        if conn is None:
            conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            self._readers.conn = conn
            with self._reader_lock:
                self._reader_conns.append(conn)
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.to_thread(lambda: fn(self._reader()))

    # -- the request path

    async def admit(
        self,
        request_id: str,
        lines: Sequence[BudgetLine],
        worst_case_nano: int,
        *,
        attribution: Mapping[str, Any] | None = None,
        rate_limits: Mapping[str, int] | None = None,
        now: float | None = None,
    ) -> AdmitResult:
        """Reserve `worst_case_nano` on every budget line, all or none, in one transaction.

        Also counts the request against `rate_limits` ({"rpm": n, "rpd": n}) and
        enqueues its admitSpend. `attribution` (organization_id, project_id,
        virtual_key_id, model, model_provider_id, labels, metadata, request_type …)
        goes into every spend command of this request.
        """
        now = _now(now)
        lines, worst, limits = list(lines), int(worst_case_nano), dict(rate_limits or {})
        windows = rate_windows(now)
        with self._lock:
            held = self._held.get(request_id)
            if held is not None:  # the same request admitted twice (a retry): one reservation
                return AdmitResult(True, reserved_nano=held[0])
            if limits:
                counts = {kind: self._rates.get((kind, windows[kind].start), 0) for kind in limits}
                refusal = check_rate_limits(limits, counts, now)
                if refusal is not None:
                    return AdmitResult(False, refusal)
            rows = [self._totals.setdefault((ln.budget_id, ln.window_start), [ln.bundle_spent_nano, 0, 0, 0]) for ln in lines]
            decision = decide_admission([(ln, Totals(*row)) for ln, row in zip(lines, rows, strict=True)], worst, now)
            if not decision.admitted:
                return AdmitResult(False, decision.refusal, decision.warning)
            for row in rows:
                row[3] += worst
            for kind in limits:
                key = (kind, windows[kind].start)
                self._rates[key] = self._rates.get(key, 0) + 1
            self._held[request_id] = (worst, [(ln.budget_id, ln.window_start) for ln in lines])
        self._submit(partial(_admit, self, request_id, lines, worst, dict(attribution or {}), limits, now))
        return AdmitResult(True, None, decision.warning, worst)

    def _settled(self, request_id: str, cost: int) -> None:
        """Mirror a committed settle (cost) or release (0) of a request this process admitted."""
        with self._lock:
            held = self._held.pop(request_id, None)
            if held is None:
                return
            amount, keys = held
            for key in keys:
                row = self._totals.get(key)
                if row is not None:
                    row[3] -= amount
                    row[2] += cost

    async def settle(
        self,
        request_id: str,
        cost_nano: int,
        usage: Usage,
        attribution: Mapping[str, Any] | None = None,
        *,
        client: str | None = None,
        provider: str | None = None,
        priced_by_fallback: bool = False,
        duration_ms: int | None = None,
        now: float | None = None,
    ) -> None:
        """Replace the reservation by the real cost; record it; enqueue confirmSpend."""
        fn = partial(
            _settle, request_id, int(cost_nano), usage, dict(attribution or {}), client, provider, priced_by_fallback, duration_ms, _now(now)
        )
        await self._write(fn)
        self._settled(request_id, int(cost_nano))

    async def release(
        self,
        request_id: str,
        error: Mapping[str, Any],
        attribution: Mapping[str, Any] | None = None,
        *,
        client: str | None = None,
        provider: str | None = None,
        now: float | None = None,
    ) -> None:
        """The upstream call failed and is not billed: drop the reservation, enqueue failSpend.

        `error` is `{"type": ..., "http_status": ...}`.
        """
        fn = partial(_release, request_id, dict(error), dict(attribution or {}), client, provider, _now(now))
        await self._write(fn)
        self._settled(request_id, 0)

    async def reclaim_stale_reservations(self, now: float | None = None) -> list[str]:
        """Release reservations left by a dead earlier process; returns their request ids."""
        reclaimed = await self._write(partial(_reclaim, self, _now(now)))
        await self._write(self._load_mirror)  # at start-up, before any admission
        return reclaimed

    async def import_history(self, rows: Iterable[HistoryRow]) -> int:
        """Append settled requests to the history only (not to the budget totals), in one transaction.

        For imports and for the admission benchmark's million-row ledger.
        """
        return await self._write(partial(_import_history, rows))

    # -- the control plane side

    async def apply_bundle_budgets(self, budgets: Sequence[BudgetSpec], now: float | None = None) -> None:
        """Fold a new bundle's budgets into the ledger (the bundle rule in the module doc)."""
        counted = await self._write(partial(_apply_bundle_budgets, list(budgets), _now(now)))
        with self._lock:
            for key, acked, delivered in counted:
                row = self._totals.setdefault(key, [acked, delivered, 0, 0])
                row[0], row[1] = acked, delivered

    async def enqueue(self, kind: str, idempotency_key: str, payload: Mapping[str, Any], now: float | None = None) -> bool:
        """Add an outbox record (e.g. a span); False when the key is already queued."""
        return await self._write(partial(_enqueue, kind, idempotency_key, dict(payload), _now(now)))

    async def due_outbox(self, kind: str, limit: int = 500, now: float | None = None) -> list[OutboxRecord]:
        return await self._write(partial(_due_outbox, kind, limit, _now(now)))

    async def ack_outbox(self, ids: Sequence[int], now: float | None = None) -> None:
        """The control plane accepted these records: delete them; their spend becomes `delivered`."""
        moved = await self._write(partial(_ack_outbox, list(ids), _now(now)))
        with self._lock:
            for key, amount in moved:
                row = self._totals.get(key)
                if row is not None:
                    row[2] -= amount
                    row[1] += amount

    async def defer_outbox(self, ids: Sequence[int], error: str, next_attempt_at: float) -> None:
        await self._write(partial(_defer_outbox, list(ids), error, next_attempt_at))

    async def reject_outbox(self, ids: Sequence[int], reason: str) -> None:
        """Per-record rejections: kept for the local API, never retried, spend stays local."""
        await self._write(partial(_reject_outbox, list(ids), reason))

    async def save_bundle(self, body: str, etag: str | None, fetched_at: float | None = None) -> None:
        await self._write(partial(_save_bundle, body, etag, _now(fetched_at)))

    async def load_bundle(self) -> StoredBundle | None:
        return await self._read(_load_bundle)

    async def kv_set(self, key: str, value: str) -> None:
        await self._write(lambda db: db.execute("INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", [key, value]))

    async def kv_get(self, key: str) -> str | None:
        def read(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT value FROM kv WHERE key = ?", [key]).fetchone()
            return None if row is None else str(row["value"])

        return await self._read(read)

    async def prune(self, now: float | None = None, keep_s: float = 40 * 86400) -> int:
        """Drop totals of windows that ended long ago (nothing reserved on them)."""
        cutoff = _now(now) - keep_s
        gone = await self._write(partial(_prune, cutoff))
        with self._lock:
            for key in gone:
                if self._totals.get(key, [0, 0, 0, 0])[3] == 0:
                    self._totals.pop(key, None)
            for key in [k for k in self._rates if k[1] < cutoff]:
                del self._rates[key]
        return len(gone)

    # -- the spend view

    async def budget_view(self, lines: Sequence[BudgetLine]) -> list[BudgetStatus]:
        """Per budget (each line in its current window): limit, spent, reserved, remaining, pct."""
        # From the admission mirror: it already holds the admissions whose writes are still queued.
        with self._lock:
            totals = [
                Totals(*row) if (row := self._totals.get((ln.budget_id, ln.window_start))) else Totals(spent_acked=ln.bundle_spent_nano)
                for ln in lines
            ]
        return [_budget_status(line, t) for line, t in zip(lines, totals, strict=True)]

    async def daily_spend(self, day: str | None = None, now: float | None = None) -> DailySpend:
        """Requests, tokens and cost of one local day (default today), per model and per client."""
        return await self._read(partial(_daily_spend, day or local_day(_now(now))))

    async def daily_totals(self, days: int, now: float | None = None) -> list[tuple[str, int, int]]:
        """(day, cost_nano, requests) for each of the last `days` local days up to today, oldest first, zeros included."""
        return await self._read(partial(_daily_totals, days, _now(now)))

    async def outbox_counts(self) -> dict[str, int]:
        def read(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute("SELECT kind || ':' || state AS k, count(*) AS n FROM outbox GROUP BY 1").fetchall()
            return {r["k"]: int(r["n"]) for r in rows}

        return await self._read(read)

    async def outbox_dropped(self) -> int:
        """How many records the size cap has discarded, ever."""
        return int(await self.kv_get(OUTBOX_DROPPED_KEY) or 0)

    async def cap_outbox(self, max_bytes: int) -> int:
        """Keep the outbox under `max_bytes` of payload by dropping its oldest records; returns how many.

        Dropping a spend command loses its delivery, never its spend: the ledger
        keeps counting it as settled locally, so budgets stay right.
        """
        return await self._write(partial(_cap_outbox, max_bytes))


# --- files and connections ---------------------------------------------------------------


def _exclusive_lock(path: Path) -> Any:
    """Hold `<db>.lock` for the store's life: one process owns the ledger (see the module doc)."""
    handle = open(path.with_name(path.name + ".lock"), "a+b")
    os.chmod(handle.name, 0o600)
    try:
        if sys.platform == "win32":
            import msvcrt

            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise StoreInUse(f"another Governor agent is using {path}: stop it first (`governor status`)") from None
    return handle


def _prepare_files(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    # SQLite creates -wal and -shm with the database file's mode.
    os.chmod(path, 0o600)


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions; every write says BEGIN IMMEDIATE itself.
    conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


WRITE_BATCH = 256


def _commit_batch(db: sqlite_utils.Database, batch: list[tuple[Callable[[sqlite_utils.Database], Any], concurrent.futures.Future[Any]]]) -> None:
    """Group commit: every write waiting in the queue runs in one transaction, each
    in its own savepoint (a failing write is rolled back alone), and the callers
    hear back only once the whole batch is committed. Under load this turns
    dozens of commits into one; alone, a write costs what it did."""
    db.execute("BEGIN IMMEDIATE")
    outcomes: list[tuple[concurrent.futures.Future[Any], bool, Any]] = []
    for fn, fut in batch:
        if not fut.set_running_or_notify_cancel():
            continue
        db.execute("SAVEPOINT write")
        try:
            outcomes.append((fut, True, fn(db)))
            db.execute("RELEASE write")
        except BaseException as e:  # noqa: BLE001 - delivered to the awaiting caller
            db.execute("ROLLBACK TO write")
            db.execute("RELEASE write")
            outcomes.append((fut, False, e))
    try:
        db.execute("COMMIT")
    except BaseException as e:  # noqa: BLE001 - every caller of the batch hears of it
        db.conn.rollback()
        outcomes = [(fut, False, e) for fut, _, _ in outcomes]
    for fut, ok, value in outcomes:
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


@contextmanager
def _immediate(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """A write transaction that takes the write lock first, so check-then-reserve is atomic.

    Inside the writer's batch (already in a transaction) the batch's savepoint
    gives the same atomicity, so this only yields.
    """
    if db.conn.in_transaction:
        yield db
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.rollback()
        raise
    db.execute("COMMIT")


def migrate(db: sqlite_utils.Database) -> int:
    """Run pending MIGRATIONS, each in its own transaction; safe to run from many processes at once."""
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL) STRICT")
    for number, migration in enumerate(MIGRATIONS, start=1):
        with _immediate(db):
            row = db.execute("SELECT version FROM schema_version WHERE id = 1").fetchone()
            current = row[0] if row else 0
            if current >= number:
                continue
            migration(db)
            db.execute(
                "INSERT INTO schema_version (id, version) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET version = excluded.version",
                [number],
            )
    row = db.execute("SELECT version FROM schema_version WHERE id = 1").fetchone()
    return int(row[0])


def _now(now: float | None) -> float:
    return time.time() if now is None else float(now)


def local_day(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.localtime(ts))


def _host_boot_id() -> str:
    # After a reboot no earlier process can still be running, whatever the pids say.
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if sys.platform == "win32":  # os.kill(pid, 0) would send CTRL_C_EVENT on Windows
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # type: ignore[attr-defined]
        if not handle:
            return False
        code = ctypes.c_ulong()
        ctypes.windll.kernel32.GetExitCodeProcess(handle, ctypes.byref(code))  # type: ignore[attr-defined]
        ctypes.windll.kernel32.CloseHandle(handle)  # type: ignore[attr-defined]
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- write operations (run on the writer thread) ------------------------------------------------


def _admit(
    store: Store,
    request_id: str,
    lines: list[BudgetLine],
    worst_case: int,
    attribution: dict[str, Any],
    rate_limits: dict[str, int],
    now: float,
    db: sqlite_utils.Database,
) -> None:
    """Write an admission the mirror already decided: totals, reservation, rate counters, admitSpend."""
    windows = rate_windows(now)
    with _immediate(db):
        for line in lines:
            db.execute(
                """INSERT INTO budget_totals (budget_id, window_start, window_end, scope, window, on_breach, provider,
                                              limit_nano, spent_acked_nano, reserved_nano, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (budget_id, window_start) DO UPDATE SET
                       limit_nano = excluded.limit_nano, on_breach = excluded.on_breach, window_end = excluded.window_end,
                       reserved_nano = reserved_nano + excluded.reserved_nano, updated_at = excluded.updated_at""",
                [line.budget_id, line.window_start, line.window_end, line.scope, line.window, line.on_breach,
                 line.provider, line.limit_nano, line.bundle_spent_nano, worst_case, now],
            )
        db.execute(
            "INSERT INTO reservations (request_id, amount_nano, windows, attribution, created_at, pid, boot_id, host_boot_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [request_id, worst_case, json.dumps([[ln.budget_id, ln.window_start] for ln in lines]),
             json.dumps(attribution), now, store.pid, store.boot_id, store.host_boot_id],
        )
        for kind in rate_limits:
            db.execute(
                "INSERT INTO rate_counters (kind, window_start, count) VALUES (?, ?, 1) ON CONFLICT (kind, window_start) DO UPDATE SET count = count + 1",
                [kind, windows[kind].start],
            )
        command = {"gateway_request_id": request_id, "occurred_at": int(now * 1000), **attribution}
        _enqueue_spend(db, "admitSpend", request_id, command, now)


def _take_reservation(db: sqlite_utils.Database, request_id: str) -> dict[str, Any] | None:
    row = db.execute("SELECT amount_nano, windows, attribution FROM reservations WHERE request_id = ?", [request_id]).fetchone()
    if row is None:
        return None
    db.execute("DELETE FROM reservations WHERE request_id = ?", [request_id])
    return {"amount_nano": int(row[0]), "windows": json.loads(row[1]), "attribution": json.loads(row[2])}


def _take_reservation_once(db: sqlite_utils.Database, request_id: str, verb: str) -> dict[str, Any] | None:
    """The reservation to settle or release; None when that already happened (both are idempotent)."""
    reservation = _take_reservation(db, request_id)
    if reservation is None and not db.execute("SELECT 1 FROM settlements WHERE request_id = ?", [request_id]).fetchone():
        raise ReservationNotFound(f"no reservation for request {request_id!r}; admit it before {verb}")
    return reservation


def _usage_wire(usage: Usage) -> dict[str, int]:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_creation_1h_tokens": usage.cache_write_1h_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
    }


def _settle(
    request_id: str,
    cost: int,
    usage: Usage,
    attribution: dict[str, Any],
    client: str | None,
    provider: str | None,
    priced_by_fallback: bool,
    duration_ms: int | None,
    now: float,
    db: sqlite_utils.Database,
) -> None:
    with _immediate(db):
        reservation = _take_reservation_once(db, request_id, "settling")
        if reservation is None:
            return
        for budget_id, window_start in reservation["windows"]:
            db.execute(
                """UPDATE budget_totals SET reserved_nano = reserved_nano - ?, settled_unacked_nano = settled_unacked_nano + ?,
                          updated_at = ? WHERE budget_id = ? AND window_start = ?""",
                [reservation["amount_nano"], cost, now, budget_id, window_start],
            )
        attribution = {**reservation["attribution"], **attribution}
        model = usage.model or attribution.get("model")
        _insert_settlement(db, request_id, now, "confirmed", model, provider, client, usage, cost, priced_by_fallback)
        command = {"gateway_request_id": request_id, "occurred_at": int(now * 1000), **attribution, "model": model, "usage": _usage_wire(usage)}
        if duration_ms is not None:
            command["duration_ms"] = duration_ms
        _enqueue_spend(db, "confirmSpend", request_id, command, now, ledger_nano=cost, ledger_windows=reservation["windows"])


def _release(
    request_id: str,
    error: dict[str, Any],
    attribution: dict[str, Any],
    client: str | None,
    provider: str | None,
    now: float,
    db: sqlite_utils.Database,
) -> None:
    with _immediate(db):
        reservation = _take_reservation_once(db, request_id, "releasing")
        if reservation is None:
            return
        _release_reservation(db, request_id, reservation, error, attribution, client, provider, now)


def _release_reservation(
    db: sqlite_utils.Database,
    request_id: str,
    reservation: dict[str, Any],
    error: dict[str, Any],
    attribution: dict[str, Any],
    client: str | None,
    provider: str | None,
    now: float,
) -> None:
    for budget_id, window_start in reservation["windows"]:
        db.execute(
            "UPDATE budget_totals SET reserved_nano = reserved_nano - ?, updated_at = ? WHERE budget_id = ? AND window_start = ?",
            [reservation["amount_nano"], now, budget_id, window_start],
        )
    attribution = {**reservation["attribution"], **attribution}
    usage = Usage()
    _insert_settlement(db, request_id, now, "failed", attribution.get("model"), provider, client, usage, 0, False)
    command = {"gateway_request_id": request_id, "occurred_at": int(now * 1000), **attribution, "usage": _usage_wire(usage), "error": error}
    _enqueue_spend(db, "failSpend", request_id, command, now)


def _reclaim(store: Store, now: float, db: sqlite_utils.Database) -> list[str]:
    with _immediate(db):
        rows = db.execute(
            "SELECT request_id, pid, boot_id, host_boot_id, created_at FROM reservations WHERE boot_id != ?", [store.boot_id]
        ).fetchall()
        stale = [
            rid
            for rid, pid, _boot, host_boot, created_at in rows
            if host_boot != store.host_boot_id or not _pid_alive(int(pid)) or created_at < now - store.stale_after_s
        ]
        for rid in stale:
            reservation = _take_reservation(db, rid)
            assert reservation is not None
            error = {"type": "gateway_restarted", "http_status": 0}
            _release_reservation(db, rid, reservation, error, {}, None, None, now)
        return stale


def _insert_settlement(
    db: sqlite_utils.Database,
    request_id: str,
    now: float,
    outcome: str,
    model: str | None,
    provider: str | None,
    client: str | None,
    usage: Usage,
    cost: int,
    priced_by_fallback: bool,
) -> None:
    db.execute(
        """INSERT INTO settlements (request_id, ts, day, outcome, model, provider, client, input_tokens, output_tokens,
                                    cache_read_tokens, cache_write_tokens, reasoning_tokens, cost_nano, priced_by_fallback)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [request_id, now, local_day(now), outcome, model, provider, client, usage.input_tokens, usage.output_tokens,
         usage.cache_read_tokens, usage.cache_write_tokens, usage.reasoning_tokens, cost, int(priced_by_fallback)],
    )


def _enqueue_spend(
    db: sqlite_utils.Database,
    command: str,
    request_id: str,
    payload: dict[str, Any],
    now: float,
    *,
    ledger_nano: int = 0,
    ledger_windows: list[Any] | None = None,
) -> None:
    if not getattr(db, "spend_outbox", True):
        return
    record = {"command": command, "payload": payload}
    db.execute(
        """INSERT INTO outbox (kind, idempotency_key, payload, created_at, next_attempt_at, ledger_nano, ledger_windows)
           VALUES ('spend_command', ?, ?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING""",
        [f"{request_id}:{command}", json.dumps(record), now, now, ledger_nano, json.dumps(ledger_windows or [])],
    )


def _enqueue(kind: str, key: str, payload: dict[str, Any], now: float, db: sqlite_utils.Database) -> bool:
    with _immediate(db):
        cur = db.execute(
            "INSERT INTO outbox (kind, idempotency_key, payload, created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING",
            [kind, key, json.dumps(payload), now, now],
        )
        return cur.rowcount == 1


def _due_outbox(kind: str, limit: int, now: float, db: sqlite_utils.Database) -> list[OutboxRecord]:
    rows = db.execute(
        """SELECT id, kind, idempotency_key, payload, created_at, attempts FROM outbox
           WHERE state = 'pending' AND kind = ? AND next_attempt_at <= ? ORDER BY id LIMIT ?""",
        [kind, now, limit],
    ).fetchall()
    return [OutboxRecord(int(r[0]), r[1], r[2], json.loads(r[3]), float(r[4]), int(r[5])) for r in rows]


def _ack_outbox(ids: list[int], now: float, db: sqlite_utils.Database) -> list[tuple[tuple[str, int], int]]:
    moved: list[tuple[tuple[str, int], int]] = []
    with _immediate(db):
        for outbox_id in ids:
            row = db.execute("SELECT ledger_nano, ledger_windows FROM outbox WHERE id = ?", [outbox_id]).fetchone()
            if row is None:
                continue  # acknowledged twice
            amount, windows = int(row[0]), json.loads(row[1])
            for budget_id, window_start in windows if amount else []:
                db.execute(
                    """UPDATE budget_totals SET settled_unacked_nano = settled_unacked_nano - ?, delivered_nano = delivered_nano + ?,
                              updated_at = ? WHERE budget_id = ? AND window_start = ?""",
                    [amount, amount, now, budget_id, window_start],
                )
                moved.append(((budget_id, int(window_start)), amount))
            db.execute("DELETE FROM outbox WHERE id = ?", [outbox_id])
    return moved


def _defer_outbox(ids: list[int], error: str, next_attempt_at: float, db: sqlite_utils.Database) -> None:
    with _immediate(db):
        for outbox_id in ids:
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? WHERE id = ?",
                [error, next_attempt_at, outbox_id],
            )


def _reject_outbox(ids: list[int], reason: str, db: sqlite_utils.Database) -> None:
    with _immediate(db):
        for outbox_id in ids:
            db.execute("UPDATE outbox SET state = 'rejected', attempts = attempts + 1, last_error = ? WHERE id = ?", [reason, outbox_id])


def _apply_bundle_budgets(budgets: list[BudgetSpec], now: float, db: sqlite_utils.Database) -> list[tuple[tuple[str, int], int, int]]:
    """Returns (budget window, spent_acked, delivered) as now written, for the admission mirror."""
    written: list[tuple[tuple[str, int], int, int]] = []
    with _immediate(db):
        for b in budgets:
            counted = bundle_window(b)
            win = current_window(b.window, b.resets_at, now) if counted.start == -1 else counted
            spent = int(b.spent_micro_usd) * NANO_PER_MICRO
            limit = int(b.limit_micro_usd) * NANO_PER_MICRO
            row = db.execute(
                "SELECT spent_acked_nano, delivered_nano FROM budget_totals WHERE budget_id = ? AND window_start = ?",
                [b.id, win.start],
            ).fetchone()
            if row is None:
                db.execute(
                    """INSERT INTO budget_totals (budget_id, window_start, window_end, scope, window, on_breach, provider,
                                                  limit_nano, spent_acked_nano, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                    [b.id, win.start, win.end, b.scope, b.window, b.on_breach, provider_filter(b), limit, spent, now],
                )
                written.append(((b.id, win.start), spent, 0))
                continue
            acked, delivered = int(row[0]), int(row[1])
            if spent >= acked:
                new_acked, new_delivered = spent, max(0, acked + delivered - spent)
            else:  # the control plane reset or corrected this budget
                new_acked, new_delivered = spent, 0
            db.execute(
                """UPDATE budget_totals SET spent_acked_nano = ?, delivered_nano = ?, limit_nano = ?, on_breach = ?,
                          scope = ?, updated_at = ? WHERE budget_id = ? AND window_start = ?""",
                [new_acked, new_delivered, limit, b.on_breach, b.scope, now, b.id, win.start],
            )
            written.append(((b.id, win.start), new_acked, new_delivered))
    return written


def _import_history(rows: Iterable[HistoryRow], db: sqlite_utils.Database) -> int:
    params = (
        [r.request_id, r.ts, local_day(r.ts), r.outcome, r.model, r.provider, r.client, r.usage.input_tokens,
         r.usage.output_tokens, r.usage.cache_read_tokens, r.usage.cache_write_tokens, r.usage.reasoning_tokens,
         r.cost_nano, int(r.priced_by_fallback)]
        for r in rows
    )
    with _immediate(db):
        cur = db.conn.executemany(
            """INSERT INTO settlements (request_id, ts, day, outcome, model, provider, client, input_tokens, output_tokens,
                                        cache_read_tokens, cache_write_tokens, reasoning_tokens, cost_nano, priced_by_fallback)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            params,
        )
        return cur.rowcount


def _save_bundle(body: str, etag: str | None, fetched_at: float, db: sqlite_utils.Database) -> None:
    with _immediate(db):
        db.execute(
            """INSERT INTO bundle (id, body, etag, fetched_at) VALUES (1, ?, ?, ?)
               ON CONFLICT (id) DO UPDATE SET body = excluded.body, etag = excluded.etag, fetched_at = excluded.fetched_at""",
            [body, etag, fetched_at],
        )


OUTBOX_DROPPED_KEY = "outbox_dropped"


def _cap_outbox(max_bytes: int, db: sqlite_utils.Database) -> int:
    total = db.execute("SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()[0]
    if total <= max_bytes:
        return 0
    excess, doomed = total - max_bytes, []
    for outbox_id, size in db.execute("SELECT id, LENGTH(payload) FROM outbox ORDER BY id"):
        if excess <= 0:
            break
        doomed.append(outbox_id)
        excess -= size
    with _immediate(db):
        db.conn.executemany("DELETE FROM outbox WHERE id = ?", [[i] for i in doomed])
        db.execute(
            """INSERT INTO kv (key, value) VALUES (?, ?)
               ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + excluded.value AS TEXT)""",
            [OUTBOX_DROPPED_KEY, str(len(doomed))],
        )
    return len(doomed)


def _prune(cutoff: float, db: sqlite_utils.Database) -> list[tuple[str, int]]:
    with _immediate(db):
        gone = db.execute(
            "DELETE FROM budget_totals WHERE window_end IS NOT NULL AND window_end < ? AND reserved_nano = 0 RETURNING budget_id, window_start",
            [cutoff],
        ).fetchall()
        db.execute("DELETE FROM rate_counters WHERE window_start < ?", [cutoff])
        return [(str(r[0]), int(r[1])) for r in gone]


# --- reads (worker threads, read-only connections) ---------------------------------------------------


def _load_bundle(conn: sqlite3.Connection) -> StoredBundle | None:
    row = conn.execute("SELECT body, etag, fetched_at FROM bundle WHERE id = 1").fetchone()
    return None if row is None else StoredBundle(row["body"], row["etag"], float(row["fetched_at"]))


def _micro_up(nano: int) -> int:
    return -(-nano // NANO_PER_MICRO)


def _budget_status(line: BudgetLine, totals: Totals) -> BudgetStatus:
    remaining = max(0, line.limit_nano - totals.committed)
    return BudgetStatus(
        budget_id=line.budget_id,
        scope=line.scope,
        window=line.window,
        on_breach=line.on_breach,
        provider=line.provider,
        limit_micro_usd=line.limit_nano // NANO_PER_MICRO,
        spent_micro_usd=_micro_up(totals.spent),
        reserved_micro_usd=_micro_up(totals.reserved),
        remaining_micro_usd=remaining // NANO_PER_MICRO,
        window_end=line.window_end,
        pct=percent_used(line, totals),
    )


_SPEND_COLUMNS = """count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0),
                    coalesce(sum(cache_read_tokens), 0), coalesce(sum(cache_write_tokens), 0), coalesce(sum(cost_nano), 0)"""


def _spend_rows(conn: sqlite3.Connection, group: str, day: str) -> list[SpendRow]:
    # `group` is one of two column names chosen below, never caller input.
    rows = conn.execute(
        f"SELECT coalesce({group}, 'unknown'), {_SPEND_COLUMNS} FROM settlements WHERE day = ? GROUP BY 1 ORDER BY 7 DESC, 1",
        [day],
    ).fetchall()
    return [SpendRow(str(r[0]), *map(int, tuple(r)[1:])) for r in rows]


def _daily_totals(days: int, now: float, conn: sqlite3.Connection) -> list[tuple[str, int, int]]:
    today = datetime.date.fromisoformat(local_day(now))
    wanted = [(today - datetime.timedelta(days=back)).isoformat() for back in range(max(1, days) - 1, -1, -1)]
    rows = conn.execute(
        "SELECT day, COALESCE(SUM(cost_nano), 0), COUNT(*) FROM settlements WHERE day >= ? GROUP BY day", [wanted[0]]
    ).fetchall()
    found = {r[0]: (int(r[1]), int(r[2])) for r in rows}
    return [(day, *found.get(day, (0, 0))) for day in wanted]


def _daily_spend(day: str, conn: sqlite3.Connection) -> DailySpend:
    total = conn.execute(f"SELECT 'total', {_SPEND_COLUMNS} FROM settlements WHERE day = ?", [day]).fetchone()
    return DailySpend(
        day=day,
        total=SpendRow(str(total[0]), *map(int, tuple(total)[1:])),
        by_model=_spend_rows(conn, "model", day),
        by_client=_spend_rows(conn, "client", day),
    )
