"""Housekeeping beside the proxy: keep the outbox within its size cap and
drop ledger windows that ended long ago. Never on the request path."""

from __future__ import annotations

import asyncio
import logging

from agent.state import GatewayState

log = logging.getLogger("governor.maintenance")
EVERY_S = 60.0
MIB = 1024 * 1024


async def tidy(state: GatewayState) -> None:
    dropped = await state.store.cap_outbox(state.settings.outbox_max_mb * MIB)
    if dropped:
        log.warning("outbox_capped dropped=%d cap_mb=%d", dropped, state.settings.outbox_max_mb)
    await state.store.prune()


async def run(state: GatewayState, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await tidy(state)
        try:
            await asyncio.wait_for(stop.wait(), EVERY_S)
        except TimeoutError:
            pass
