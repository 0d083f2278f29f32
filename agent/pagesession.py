"""How a browser gets onto the spend page without the local key in a URL.

A keyed caller (`governor open`, the tray) asks for a one-time link; the
browser trades its token, once and within `LINK_TTL_S`, for a session cookie
(`HttpOnly; SameSite=Strict; Path=/_governor`) and is redirected to the bare
page, so the token leaves the address bar. Tokens and sessions live in memory
only: a restart of the agent signs every browser out.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

LINK_TTL_S = 60.0
SESSION_TTL_S = 12 * 3600.0
MAX_PENDING = 64  # unused links kept at most; the oldest go first


@dataclass
class PageSessions:
    clock: Callable[[], float] = time.monotonic
    _links: dict[str, float] = field(default_factory=dict)  # token -> expiry
    _sessions: dict[str, float] = field(default_factory=dict)  # cookie value -> expiry

    def new_link_token(self) -> str:
        self._expire()
        while len(self._links) >= MAX_PENDING:
            self._links.pop(next(iter(self._links)))
        token = secrets.token_urlsafe(32)
        self._links[token] = self.clock() + LINK_TTL_S
        return token

    def redeem(self, token: str) -> str | None:
        """A new session id for a valid, unused, unexpired token (which is spent), else None."""
        self._expire()
        for known in list(self._links):
            if hmac.compare_digest(known.encode(), token.encode()):
                del self._links[known]
                session = secrets.token_urlsafe(32)
                self._sessions[session] = self.clock() + SESSION_TTL_S
                return session
        return None

    def valid(self, session: str | None) -> bool:
        if not session:
            return False
        self._expire()
        return any(hmac.compare_digest(known.encode(), session.encode()) for known in self._sessions)

    def _expire(self) -> None:
        now = self.clock()
        for table in (self._links, self._sessions):
            for key in [k for k, expiry in table.items() if expiry <= now]:
                del table[key]
