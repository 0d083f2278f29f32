"""Spend commands and OTLP spans, drained from the store's outbox to the control plane.

The record step writes each call's spend commands (`admitSpend`, then
`confirmSpend` or `failSpend`) and its span record into the outbox in the same
SQLite transaction as the ledger change. The `Exporter` drains them, two
sequential loops (one request in flight per endpoint), never on a request's
path:

- spend: `POST /api/agent/v1/spend-commands`, ≤ 500 records a batch, oldest
  first. Records are acknowledged in the store only after a 2xx; a 2xx's
  per-record `rejected[]` entries are kept as rejected (with their code) and
  never resent. Redelivery after a crash or timeout is safe: the control plane
  is idempotent by (`command`, `gateway_request_id`). A whole-batch 400/422 is
  bisected down to the record that causes it, which alone is rejected.
- spans: OTLP/HTTP protobuf to `/api/otel/v1/traces` with `X-Auth-Token:
  <project_otlp_token>`; optionally also to an extra collector (best effort).

Network errors, 5xx and 429 back off with full jitter (honouring
`Retry-After`) and retry the same records.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from agent import otlp
from agent.sync import Backoff, call_store, error_code, wait_any
from agent.version import VERSION

__all__ = [
    "MAX_SPEND_BATCH",
    "SPANS_PATH",
    "SPEND_PATH",
    "ExportStats",
    "Exporter",
    "OutboxStore",
    "SPAN_KIND",
    "SPEND_KIND",
    "agent_instance_id",
]

log = logging.getLogger("governor.export")

SPEND_PATH = "/api/agent/v1/spend-commands"
SPANS_PATH = "/api/otel/v1/traces"
MAX_SPEND_BATCH = 500
USER_AGENT = f"governor/{VERSION}"
_RETRYABLE = {408, 425, 429, 500, 502, 503, 504}


class OutboxRecordLike(Protocol):
    id: int
    payload: dict[str, Any]


class OutboxStore(Protocol):
    """What export needs from `agent.store.Store`: kinds `spend_command` and `span`.

    A spend row's payload is `{"command": "admitSpend"|..., "payload": {...}}`;
    a span row's payload is an `agent.otlp.build_span` record.
    """

    async def due_outbox(self, kind: str, limit: int = 500, now: float | None = None) -> Sequence[OutboxRecordLike]: ...

    async def ack_outbox(self, ids: Sequence[int], now: float | None = None) -> None: ...

    async def defer_outbox(self, ids: Sequence[int], error: str, next_attempt_at: float) -> None: ...

    async def reject_outbox(self, ids: Sequence[int], reason: str) -> None: ...


SPEND_KIND = "spend_command"
SPAN_KIND = "span"


def agent_instance_id(data_dir: Path) -> str:
    """A stable id for this agent install (`pod_id` on the wire), created on first use."""
    path = data_dir / "agent_id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        value = "gvn_" + uuid.uuid4().hex
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(value)
        return value


# -- the exporter ------------------------------------------------------------------


@dataclass
class ExportStats:
    spend_sent: int = 0
    spend_rejected: int = 0
    spend_batches: int = 0
    spans_sent: int = 0
    spans_dropped: int = 0
    extra_failures: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_success_at: float | None = None
    rejections: dict[str, int] = field(default_factory=dict)  # code -> count

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _payload(row: Any) -> dict[str, Any]:
    value = row.payload
    return dict(json.loads(value) if isinstance(value, (str, bytes)) else value)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return min(300.0, max(0.0, float(value))) if value else None
    except ValueError:
        return None


class Exporter:
    """Drains the outbox; `await run(stop)` until `stop` is set (a batch in flight then
    gets `shutdown_grace_s` to be delivered and acknowledged).

    - `vk_provider()`: the personal VK (Bearer on spend commands).
    - `otlp_token_provider()`: the current bundle's `project_otlp_token`; None while
      unknown (spans wait), "" when the key has no trace project (spans are acked
      and dropped: there is nowhere to send them).
    - `extra_otlp_url` / `extra_otlp_headers`: an org's own collector
      (`…/v1/traces`); gets every span batch once, best effort. Without a control
      plane it becomes the only destination, with the same durability.
    """

    def __init__(
        self,
        store: OutboxStore,
        *,
        control_plane_url: str | None,
        agent_id: str,
        vk_provider: Callable[[], str | None] = lambda: None,
        otlp_token_provider: Callable[[], str | None] = lambda: None,
        extra_otlp_url: str | None = None,
        extra_otlp_headers: Mapping[str, str] | None = None,
        spend_batch: int = MAX_SPEND_BATCH,
        span_batch: int = 256,
        idle_s: float = 2.0,
        request_timeout_s: float = 30.0,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 60.0,
        resource: Mapping[str, Any] | None = None,
        shutdown_grace_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.store = store
        self.base_url = control_plane_url.rstrip("/") if control_plane_url else None
        self.agent_id = agent_id
        self.vk_provider = vk_provider
        self.otlp_token_provider = otlp_token_provider
        self.extra_otlp_url = extra_otlp_url
        self.extra_otlp_headers = dict(extra_otlp_headers or {})
        self.spend_batch = min(spend_batch, MAX_SPEND_BATCH)
        self.span_batch = span_batch
        self.idle_s = idle_s
        self.request_timeout_s = request_timeout_s
        self.backoff_base_s, self.backoff_cap_s = backoff_base_s, backoff_cap_s
        self.resource = dict(resource or {"service.name": "governor", "service.version": VERSION})
        self.stats = ExportStats()
        self.shutdown_grace_s = shutdown_grace_s
        self._limit = self.spend_batch
        self._wake = asyncio.Event()
        self._transport = transport

    def wake(self) -> None:
        """New records are waiting: drain now instead of after the idle tick."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(
            transport=self._transport, timeout=self.request_timeout_s, headers={"User-Agent": USER_AGENT}
        ) as client:
            loops = [asyncio.ensure_future(self._loop(client, stop, self.drain_spans_once))]
            if self.base_url:
                loops.append(asyncio.ensure_future(self._loop(client, stop, self.drain_spend_once)))
            try:
                await stop.wait()
                # Let a batch in flight finish and be acknowledged (a cut-off ack means a resend).
                await asyncio.wait(loops, timeout=self.shutdown_grace_s)
            finally:
                for task in loops:
                    task.cancel()
                await asyncio.gather(*loops, return_exceptions=True)

    async def _loop(self, client: httpx.AsyncClient, stop: asyncio.Event, once: Callable[..., Any]) -> None:
        backoff = Backoff(self.backoff_base_s, self.backoff_cap_s)
        while not stop.is_set():
            self._wake.clear()
            outcome = await once(client)
            if outcome is True:  # sent a batch: go straight on to the next one
                backoff.reset()
                continue
            if outcome is None:  # nothing to send
                backoff.reset()
                await wait_any(stop, self._wake, self.idle_s)
                continue
            delay = backoff.next_delay()
            if isinstance(outcome, float):  # the server's Retry-After
                delay = max(delay, outcome)
            await wait_any(stop, None, delay)

    def _error(self, reason: str) -> None:
        if self.stats.last_error != reason:
            log.warning("export_failed reason=%s", reason)
        self.stats.last_error, self.stats.last_error_at = reason, time.time()

    # -- spend -------------------------------------------------------------------

    async def drain_spend_once(self, client: httpx.AsyncClient) -> bool | float | None:
        """Send one batch. True: delivered (or resolved); None: nothing due; False/float: retry later."""
        assert self.base_url is not None
        rows = list(await call_store(self.store.due_outbox, SPEND_KIND, self._limit))
        if not rows:
            return None
        records = [{**_payload(row), "pod_id": self.agent_id, "pod_seq": row.id} for row in rows]
        vk = self.vk_provider()
        headers = {"Authorization": f"Bearer {vk}"} if vk else {}
        try:
            response = await client.post(self.base_url + SPEND_PATH, json={"records": records}, headers=headers)
        except httpx.HTTPError as exc:
            return await self._retry_later(rows, f"spend unreachable: {type(exc).__name__}", None)
        status = response.status_code
        if response.is_success:
            await self._settle_spend(rows, response)
            self._limit = min(self.spend_batch, self._limit * 2)
            return True
        if status == 413 and len(rows) > 1:
            self._limit = max(1, len(rows) // 2)
            return True
        if status in (400, 422):
            if len(rows) > 1:  # bisect down to the record the server cannot take
                self._limit = max(1, len(rows) // 2)
                return True
            await self._reject({rows[0].id: error_code(response) or f"http_{status}"})
            self._limit = self.spend_batch
            return True
        reason = f"spend HTTP {status} {error_code(response) or ''}".strip()
        return await self._retry_later(rows, reason, _retry_after(response))

    async def _retry_later(self, rows: Sequence[Any], reason: str, retry_after: float | None) -> bool | float:
        """Record the attempt on the rows (the loop's backoff decides when to try again)."""
        self._error(reason)
        await call_store(self.store.defer_outbox, [r.id for r in rows], reason, time.time())
        return retry_after if retry_after is not None else False

    async def _settle_spend(self, rows: Sequence[Any], response: httpx.Response) -> None:
        rejected: dict[int, str] = {}
        try:
            body = response.json()
            entries = (body.get("rejected") or []) if isinstance(body, dict) else []
        except ValueError:
            entries = []  # the 2xx is the acknowledgement; the body is informational
        for entry in entries if isinstance(entries, list) else []:
            try:
                index = int(entry["index"])
            except (KeyError, TypeError, ValueError):
                continue
            if 0 <= index < len(rows):
                rejected[rows[index].id] = str(entry.get("code") or "rejected")
        accepted = [r.id for r in rows if r.id not in rejected]
        if accepted:
            await call_store(self.store.ack_outbox, accepted)
        if rejected:
            await self._reject(rejected)
        self.stats.spend_sent += len(accepted)
        self.stats.spend_batches += 1
        self.stats.last_success_at = time.time()

    async def _reject(self, rejected: Mapping[int, str]) -> None:
        by_code: dict[str, list[int]] = {}
        for outbox_id, code in rejected.items():
            by_code.setdefault(code, []).append(outbox_id)
        for code, ids in sorted(by_code.items()):
            await call_store(self.store.reject_outbox, ids, code)
            self.stats.rejections[code] = self.stats.rejections.get(code, 0) + len(ids)
        self.stats.spend_rejected += len(rejected)
        log.warning("spend_rejected count=%d codes=%s", len(rejected), sorted(by_code))

    # -- spans -------------------------------------------------------------------

    def _span_destination(self) -> tuple[str, dict[str, str]] | None | str:
        """(url, headers) of the primary destination; None: wait; "": nowhere (drop)."""
        if self.base_url:
            token = self.otlp_token_provider()
            if token is None:
                return None
            if token == "":
                return ""
            return self.base_url + SPANS_PATH, {"X-Auth-Token": token}
        if self.extra_otlp_url:
            return self.extra_otlp_url, dict(self.extra_otlp_headers)
        return ""

    async def drain_spans_once(self, client: httpx.AsyncClient) -> bool | float | None:
        destination = self._span_destination()
        if destination is None:
            return None
        rows = list(await call_store(self.store.due_outbox, SPAN_KIND, self.span_batch))
        if not rows:
            return None
        ids = [r.id for r in rows]
        if destination == "":
            await call_store(self.store.ack_outbox, ids)
            self.stats.spans_dropped += len(ids)
            return True
        assert isinstance(destination, tuple)
        url, headers = destination
        body = otlp.encode_export_request((_payload(r) for r in rows), resource=self.resource, scope_version=VERSION)
        headers = {**headers, "Content-Type": "application/x-protobuf"}
        try:
            response = await client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return await self._retry_later(rows, f"traces unreachable: {type(exc).__name__}", None)
        status = response.status_code
        if response.is_success:
            await call_store(self.store.ack_outbox, ids)
            self.stats.spans_sent += len(ids)
            self.stats.last_success_at = time.time()
            if self.base_url and self.extra_otlp_url:
                await self._send_extra(client, body)
            return True
        if status in _RETRYABLE or status in (401, 403):  # 401/403: the next bundle may carry a new token
            return await self._retry_later(rows, f"traces HTTP {status}", _retry_after(response))
        # OTLP/HTTP: any other 4xx must not be retried.
        await call_store(self.store.reject_outbox, ids, f"otlp_http_{status}")
        self.stats.spans_dropped += len(ids)
        self._error(f"traces refused HTTP {status}; {len(ids)} spans dropped")
        return True

    async def _send_extra(self, client: httpx.AsyncClient, body: bytes) -> None:
        assert self.extra_otlp_url is not None
        try:
            response = await client.post(
                self.extra_otlp_url,
                content=body,
                headers={**self.extra_otlp_headers, "Content-Type": "application/x-protobuf"},
            )
            ok = response.is_success
        except httpx.HTTPError:
            ok = False
        if not ok:
            self.stats.extra_failures += 1
