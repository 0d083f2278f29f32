"""Bundle sync with the control plane: ETag revalidation plus the `/changes` long-poll.

Two asyncio tasks run beside the proxy, never on a request's path:

- the bundle loop: `GET /api/agent/v1/bundle` with `If-None-Match` every
  `revalidate_s` (≤ 30 s), and at once when the change feed pokes it. A 304
  costs nothing; a 200 is parsed, saved as the last good bundle and published;
  an invalid bundle is refused and the last good one stays. A 401/403 that
  names the key (`virtual_key_revoked`, …) is a revocation.
- the changes loop: `GET /api/agent/v1/changes?since=REV&timeout_s=10`. The
  server holds it open; 200 carries change events, 204 means nothing changed.
  `VK_REVOKED` / `VK_DISABLED` take effect at once (before the bundle
  confirms), every other event pokes the bundle loop.

Each loop is sequential, so there is never more than one request in flight per
endpoint; errors back off exponentially with full jitter. With the long-poll
down, revocation still lands within `revalidate_s` + one request timeout
(< 60 s) through the bundle loop.

`key_refusal` and `stale_verdict` are the pure decisions the gateway makes per
request from what this module publishes.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx

from agent.core.bundle import Bundle, BundleError, parse_bundle
from agent.version import VERSION

__all__ = [
    "BUNDLE_PATH",
    "CHANGES_PATH",
    "REVOKING_CODES",
    "Backoff",
    "BundleStore",
    "BundleSync",
    "StaleVerdict",
    "SyncStatus",
    "key_refusal",
    "stale_verdict",
]

log = logging.getLogger("governor.sync")

BUNDLE_PATH = "/api/agent/v1/bundle"
CHANGES_PATH = "/api/agent/v1/changes"
USER_AGENT = f"governor/{VERSION}"

# Error codes (401/403 bodies, bundle `status`, change kinds) that mean this key must stop working.
REVOKING_CODES = frozenset(
    {"virtual_key_revoked", "virtual_key_disabled", "virtual_key_expired", "virtual_key_not_found", "invalid_api_key"}
)
_STATUS_CODES = {"revoked": "virtual_key_revoked", "disabled": "virtual_key_disabled", "expired": "virtual_key_expired"}
_CHANGE_CODES = {"VK_REVOKED": "virtual_key_revoked", "VK_DISABLED": "virtual_key_disabled"}


# -- pure decisions ------------------------------------------------------------

StaleVerdict = Literal["fresh", "stale_open", "stale_closed"]


def stale_verdict(bundle: Bundle, validated_at: float | None, now: float) -> StaleVerdict:
    """Is the bundle too old to enforce, and if so does the org fail open or closed?

    `validated_at` is the unix time the control plane last confirmed the bundle
    (a 200 or a 304); None for a bundle that never came from a control plane
    (a file), which is never stale. `max_stale_s` null: never stale.
    `stale_closed` means: refuse with 503 `control_plane_unreachable`.
    """
    if validated_at is None or bundle.max_stale_s is None:
        return "fresh"
    if now - validated_at <= bundle.max_stale_s:
        return "fresh"
    return "stale_closed" if bundle.on_stale == "fail_closed" else "stale_open"


def key_refusal(bundle: Bundle | None, revoked_code: str | None, now: float) -> str | None:
    """The 403 error code every request must get, or None when the key may be used.

    Revocation learnt from the control plane wins; then the bundle's own
    `status`; then `expires_at`, honoured locally even offline.
    """
    if revoked_code:
        return revoked_code
    if bundle is None:
        return None
    if bundle.status in _STATUS_CODES:
        return _STATUS_CODES[bundle.status]
    if bundle.expires_at is not None and now >= bundle.expires_at:
        return "virtual_key_expired"
    return None


# -- plumbing ------------------------------------------------------------------


class Backoff:
    """Exponential backoff with full jitter: the n-th failure waits U(0, min(cap, base·2ⁿ))."""

    def __init__(self, base: float = 1.0, cap: float = 60.0, rng: random.Random | None = None):
        self.base, self.cap, self.failures = base, cap, 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2**self.failures))
        self.failures += 1
        return max(0.05, self._rng.uniform(0, ceiling))

    def reset(self) -> None:
        self.failures = 0


class StoredBundleLike(Protocol):
    body: str
    etag: str | None
    fetched_at: float


class BundleStore(Protocol):
    """What sync needs from `agent.store.Store`."""

    async def load_bundle(self) -> StoredBundleLike | None: ...

    async def save_bundle(self, body: str, etag: str | None, fetched_at: float | None = None) -> None: ...


async def call_store(method: Callable[..., Any], *args: Any) -> Any:
    """Await an async store method; run a blocking one on a worker thread, off the proxy loop."""
    if inspect.iscoroutinefunction(method):
        return await method(*args)
    result = await asyncio.to_thread(method, *args)
    if inspect.isawaitable(result):
        return await result
    return result


def error_code(response: httpx.Response) -> str | None:
    """`error.code` (or `error.type`, or an RFC 6749 `error` string) from a JSON error body."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    err = body.get("error")
    if isinstance(err, str):
        return err
    if isinstance(err, dict):
        code = err.get("code") or err.get("type")
        return str(code) if code else None
    return None


@dataclass
class SyncStatus:
    """What the local API shows about the control-plane connection."""

    connected: bool = False
    revision: str | None = None
    etag: str | None = None
    validated_at: float | None = None  # last 200/304 (unix s)
    last_error: str | None = None
    last_error_at: float | None = None
    revoked: str | None = None
    changes_revision: str | None = None
    bundle_fetches: int = 0
    not_modified: int = 0
    invalid_bundles: int = 0

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        data = dict(self.__dict__)
        data["bundle_age_s"] = None if self.validated_at is None else round(now - self.validated_at, 1)
        return data


OnBundle = Callable[[Bundle, str, float], Any]
OnRevoked = Callable[[str | None], Any]


class BundleSync:
    """Keeps the bundle current and publishes it; `await run(stop)` until `stop` is set.

    - `on_bundle(bundle, source, validated_at)`: after every 200 and 304 from the
      control plane (`source="control_plane"`) and once at start with the
      persisted last good bundle (`source="store"`, its saved `validated_at`).
    - `on_revoked(code)`: a key-level refusal code (`virtual_key_revoked`, …) when
      the control plane revokes, disables or no longer knows the key; None when
      a later bundle shows it active again. The revocation is also persisted
      (the saved bundle's `status` becomes the refusal) so a restart offline keeps
      refusing.
    - `vk_provider()`: the personal VK secret sent as `Authorization: Bearer`
      (re-read after `VK_ROTATED`); `on_rotated()` (optional) is awaited on
      `VK_ROTATED` to mint and store the new key before the bundle is refetched.
    """

    def __init__(
        self,
        base_url: str,
        store: BundleStore,
        *,
        vk_provider: Callable[[], Awaitable[str | None] | str | None],
        on_bundle: OnBundle,
        on_revoked: OnRevoked,
        on_rotated: Callable[[], Awaitable[None]] | None = None,
        revalidate_s: float = 25.0,
        changes_timeout_s: int = 10,
        request_timeout_s: float = 15.0,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.store = store
        self.vk_provider = vk_provider
        self.on_bundle = on_bundle
        self.on_revoked = on_revoked
        self.on_rotated = on_rotated
        self.revalidate_s = min(revalidate_s, 30.0)
        self.changes_timeout_s = changes_timeout_s
        self.request_timeout_s = request_timeout_s
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.status = SyncStatus()
        self.bundle: Bundle | None = None
        self._raw: str | None = None
        self._poke = asyncio.Event()
        self._vk: str | None = None
        self._transport = transport

    # -- lifecycle -------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        await self._load_persisted()
        self._vk = await self._read_vk()
        async with httpx.AsyncClient(
            base_url=self.base_url,
            transport=self._transport,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            timeout=self.request_timeout_s,
            follow_redirects=False,
        ) as client:
            tasks = [
                asyncio.ensure_future(self._bundle_loop(client, stop)),
                asyncio.ensure_future(self._changes_loop(client, stop)),
            ]
            try:
                await stop.wait()
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    def poke(self) -> None:
        """Revalidate the bundle now (also used by the local API's "sync now")."""
        self._poke.set()

    async def _load_persisted(self) -> None:
        saved = await call_store(self.store.load_bundle)
        if not saved:
            return
        try:
            bundle = parse_bundle(saved.body)
        except BundleError as exc:
            log.warning("persisted_bundle_invalid error=%s", exc.message)
            return
        self.bundle, self._raw = bundle, saved.body
        self.status.etag = saved.etag
        self.status.revision = bundle.revision
        self.status.validated_at = saved.fetched_at
        refusal = _STATUS_CODES.get(bundle.status)
        if refusal:
            self.status.revoked = refusal
            await _maybe_await(self.on_revoked(refusal))
        await _maybe_await(self.on_bundle(bundle, "store", saved.fetched_at))

    async def _read_vk(self) -> str | None:
        value = self.vk_provider()
        if inspect.isawaitable(value):
            value = await value
        return value

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._vk}"} if self._vk else {}

    # -- bundle ------------------------------------------------------------------

    async def _bundle_loop(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        backoff = Backoff(self.backoff_base_s, min(self.backoff_cap_s, self.revalidate_s))
        while not stop.is_set():
            self._poke.clear()
            ok = await self.fetch_bundle(client)
            delay = self.revalidate_s if ok else backoff.next_delay()
            if ok:
                backoff.reset()
            await wait_any(stop, self._poke, delay)

    async def fetch_bundle(self, client: httpx.AsyncClient) -> bool:
        """One revalidation. True when the control plane answered usefully (200/304/refusal)."""
        headers = self._auth()
        if self.status.etag and self.bundle is not None:
            headers["If-None-Match"] = self.status.etag
        try:
            response = await client.get(BUNDLE_PATH, headers=headers)
        except httpx.HTTPError as exc:
            return self._failed(f"unreachable: {type(exc).__name__}")
        now = time.time()
        if response.status_code == 304:
            if self.bundle is None:  # a 304 for a bundle we do not hold: ask again without the ETag
                self.status.etag = None
                return self._failed("304 without a cached bundle")
            self.status.not_modified += 1
            await self._validated(now)
            await _maybe_await(self.on_bundle(self.bundle, "control_plane", now))
            return True
        if response.status_code in (401, 403):
            code = error_code(response) or ("invalid_api_key" if response.status_code == 401 else "")
            if code in REVOKING_CODES:
                self._connected()
                await self._revoke(code)
                return True
            return self._failed(f"{response.status_code} {code or 'forbidden'}")
        if response.status_code != 200:
            return self._failed(f"HTTP {response.status_code}")
        raw = response.text
        try:
            bundle = parse_bundle(raw)
        except BundleError as exc:
            self.status.invalid_bundles += 1
            log.error("bundle_refused error=%s (keeping revision %s)", exc.message, self.status.revision)
            return self._failed(f"invalid bundle: {exc.message}")
        self.status.bundle_fetches += 1
        self.bundle, self._raw = bundle, raw
        self.status.etag = response.headers.get("ETag")
        self.status.revision = bundle.revision
        await call_store(self.store.save_bundle, raw, self.status.etag, now)
        await self._validated(now)
        refusal = _STATUS_CODES.get(bundle.status)
        if refusal:
            await self._revoke(refusal, persist=False)
        elif self.status.revoked:
            log.info("key_reinstated revision=%s", bundle.revision)
            self.status.revoked = None
            await _maybe_await(self.on_revoked(None))
        await _maybe_await(self.on_bundle(bundle, "control_plane", now))
        return True

    async def _validated(self, now: float) -> None:
        self.status.validated_at = now
        self._connected()

    def _connected(self) -> None:
        if not self.status.connected:
            log.info("control_plane_connected url=%s", self.base_url)
        self.status.connected = True

    def _failed(self, reason: str) -> bool:
        if self.status.connected or self.status.last_error != reason:
            log.warning("bundle_sync_failed reason=%s", reason)
        self.status.connected = False
        self.status.last_error, self.status.last_error_at = reason, time.time()
        return False

    async def _revoke(self, code: str, *, persist: bool = True) -> None:
        first = self.status.revoked != code
        self.status.revoked = code
        if first:
            log.warning("key_refused code=%s", code)
            await _maybe_await(self.on_revoked(code))
        if persist and self._raw is not None and self.bundle is not None:
            status = {v: k for k, v in _STATUS_CODES.items()}.get(code, "revoked")
            if self.bundle.status != status:
                data = json.loads(self._raw)
                data["status"] = status
                self._raw = json.dumps(data)
                self.bundle = parse_bundle(data)
                # No ETag: the next fetch must get a full 200 to clear the refusal.
                self.status.etag = None
                await call_store(self.store.save_bundle, self._raw, None, self.status.validated_at or time.time())

    # -- changes -----------------------------------------------------------------

    async def _changes_loop(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        backoff = Backoff(self.backoff_base_s, self.backoff_cap_s)
        while not stop.is_set():
            ok = await self.poll_changes(client)
            if ok:
                backoff.reset()
                continue
            await wait_any(stop, None, backoff.next_delay())

    async def poll_changes(self, client: httpx.AsyncClient) -> bool:
        since = self.status.changes_revision or (self.bundle.revision if self.bundle else "0")
        try:
            response = await client.get(
                CHANGES_PATH,
                params={"since": since, "timeout_s": self.changes_timeout_s},
                headers=self._auth(),
                timeout=self.changes_timeout_s + self.request_timeout_s,
            )
        except httpx.HTTPError as exc:
            log.debug("changes_poll_failed error=%s", type(exc).__name__)
            return False
        if response.status_code == 204:
            self.status.changes_revision = response.headers.get("X-LangWatch-Revision") or since
            return True
        if response.status_code in (401, 403):
            code = error_code(response)
            if code in REVOKING_CODES:
                await self._revoke(code)  # type: ignore[arg-type]
            self.poke()
            return False  # back off: nothing more to learn from this feed until the key changes
        if response.status_code != 200:
            log.debug("changes_poll_status status=%s", response.status_code)
            return False
        try:
            body = response.json()
            changes = list(body.get("changes") or [])
            current = body.get("current_revision")
        except (ValueError, AttributeError, TypeError):
            log.warning("changes_malformed body=%r", response.text[:200])
            return False
        await self.apply_changes(changes)
        if current is not None:
            self.status.changes_revision = str(current)
        return True

    async def apply_changes(self, changes: list[Any]) -> None:
        mine = self.bundle.vk_id if self.bundle else None
        refetch = False
        for change in changes:
            if not isinstance(change, dict):
                continue
            kind = str(change.get("kind", "")).upper()
            vk = change.get("virtual_key_id")
            if kind.startswith("VK_") and vk and mine and vk != mine:
                continue  # another key of the org
            if kind in _CHANGE_CODES:
                await self._revoke(_CHANGE_CODES[kind])
            elif kind == "VK_ROTATED" and self.on_rotated is not None:
                try:
                    await self.on_rotated()
                except Exception as exc:  # a failed re-mint must not kill the feed; the bundle decides
                    log.warning("vk_rotation_failed error=%s", exc)
                self._vk = await self._read_vk()
            refetch = True
        if refetch:
            self.poke()


async def _maybe_await(value: Any) -> None:
    if inspect.isawaitable(value):
        await value


async def wait_any(stop: asyncio.Event, poke: asyncio.Event | None, timeout: float) -> None:
    """Sleep up to `timeout`, waking early when `stop` or `poke` is set."""
    waiters = [asyncio.ensure_future(stop.wait())]
    if poke is not None:
        waiters.append(asyncio.ensure_future(poke.wait()))
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
