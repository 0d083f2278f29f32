"""The standalone governance source: a bundle JSON file, reloaded when it changes.

An invalid file is refused with a message naming the field, and the last good
bundle stays in force.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from agent.core.bundle import Bundle, BundleError, parse_bundle

log = logging.getLogger("governor.bundle")
OnBundle = Callable[[Bundle, str], Awaitable[None]]
POLL_S = 1.0


class BundleFile:
    def __init__(self, path: Path, on_bundle: OnBundle):
        self.path = path
        self.on_bundle = on_bundle
        self._seen: tuple[int, int] | None = None

    def _signature(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size)

    async def load(self) -> bool:
        """Load the file if it changed since last time; True when a new bundle took effect."""
        signature = self._signature()
        if signature is None or signature == self._seen:
            if signature is None and self._seen is None:
                log.warning("bundle_file_missing path=%s", self.path)
                self._seen = (0, -1)
            return False
        self._seen = signature
        try:
            raw = self.path.read_text()
            bundle = parse_bundle(raw)
        except (OSError, BundleError) as exc:
            log.error("bundle_refused path=%s error=%s", self.path, exc)
            return False
        await self.on_bundle(bundle, raw)
        log.info("bundle_loaded path=%s revision=%s", self.path, bundle.revision)
        return True

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), POLL_S)
            except TimeoutError:
                await self.load()
