"""Second: the caller must present the local key, however its SDK sends keys."""

from __future__ import annotations

import hmac

from mitmproxy import http

from addons.respond import context, reply_error
from agent import localapi
from agent.core.errors import MISSING_KEY, WRONG_KEY
from agent.state import GatewayState


def presented_key(request: http.Request) -> str | None:
    """The key from any header a supported SDK uses, or Gemini's `?key=`."""
    authorization = request.headers.get("authorization", "")
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    for header in ("x-api-key", "x-goog-api-key"):
        value = request.headers.get(header)
        if value:
            return value.strip()
    return request.query.get("key") or None


def key_matches(presented: str, expected: str) -> bool:
    return hmac.compare_digest(presented.encode(), expected.encode())


class Auth:
    def __init__(self, state: GatewayState):
        self.state = state

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        ctx = context(flow)
        if flow.response is not None or ctx is None:
            return
        route = localapi.lookup(flow.request.path.split("?", 1)[0])
        if (route is not None and not route.needs_key) or (route is None and ctx.endpoint is None):
            return  # public probes, and unknown paths (answered 404)
        key = presented_key(flow.request)
        if key is None:
            reply_error(flow, self.state.version, MISSING_KEY)
        elif not key_matches(key, self.state.local_key):
            reply_error(flow, self.state.version, WRONG_KEY)
        else:
            ctx.authenticated = True
