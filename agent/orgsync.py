"""The agent connected to its org: bundle sync and outbox export, bound to the
running gateway's state. Standalone agents (no control plane) run neither."""

from __future__ import annotations

import asyncio
import logging
import time

from agent import login
from agent.config import Settings
from agent.core.bundle import Bundle
from agent.export import Exporter, agent_instance_id
from agent.state import GatewayState
from agent.sync import BundleSync

log = logging.getLogger("governor.orgsync")


def control_plane_url(settings: Settings) -> str | None:
    """Configured (or managed) URL first; else the one `governor login` used."""
    if settings.control_plane_url:
        return settings.control_plane_url
    account = login.load_account(settings.data_dir)
    return account.control_plane_url if account else None


class OrgConnection:
    def __init__(self, state: GatewayState, url: str):
        self.state = state
        self.url = url
        data_dir = state.settings.data_dir
        self._vk: str | None = None
        self.sync = BundleSync(
            url,
            state.store,
            vk_provider=self._read_vk,
            on_bundle=self._on_bundle,
            on_revoked=self._on_revoked,
            on_rotated=self._on_rotated,
            revalidate_s=state.settings.bundle_revalidate_s,
            changes_timeout_s=state.settings.changes_timeout_s,
        )
        self.exporter = Exporter(
            state.store,
            control_plane_url=url,
            agent_id=agent_instance_id(data_dir),
            vk_provider=lambda: self._vk,
            otlp_token_provider=self._otlp_token,
            extra_otlp_url=state.settings.otlp_extra_endpoint,
        )

    async def _read_vk(self) -> str | None:
        # A keychain read can block (a macOS prompt): never on the proxy's loop.
        self._vk = await asyncio.to_thread(login.personal_vk, self.state.settings.data_dir)
        return self._vk

    async def _on_rotated(self) -> None:
        await login.mint_virtual_key(self.state.settings.data_dir)
        await self._read_vk()

    def _otlp_token(self) -> str | None:
        if self.state.bundle_source not in ("control_plane", "store"):
            return None  # not known yet: spans wait
        return self.state.bundle.project_otlp_token or ""

    async def _on_bundle(self, bundle: Bundle, source: str, validated_at: float) -> None:
        self.state.set_bundle(bundle, source, validated_at)
        self.state.bundle_validated_at = validated_at
        await self.state.store.apply_bundle_budgets(bundle.budgets)

    def _on_revoked(self, code: str | None) -> None:
        if code != self.state.revoked_code:
            log.warning("virtual_key_state code=%s", code or "active")
        self.state.revoked_code = code

    async def run(self, stop: asyncio.Event) -> None:
        self.state.control_plane = self
        await self._read_vk()  # before the exporter's first batch, which would otherwise go out without it (401)
        await asyncio.gather(self.sync.run(stop), self.exporter.run(stop))

    def to_json(self) -> dict[str, object]:
        status = self.sync.status.to_json(time.time())
        return {"url": self.url, "connected": status["connected"], "sync": status, "export": self.exporter.stats.to_json()}
