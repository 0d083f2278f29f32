"""Second: the caller must present the local key, however its SDK sends keys."""

from __future__ import annotations

import hmac
import time

from mitmproxy import http

from addons.intercept import uses_client_credential
from addons.respond import context, reply_error
from agent import localapi
from agent.core.errors import MISSING_KEY, WRONG_KEY, GatewayError
from agent.state import GatewayState
from agent.sync import key_refusal, stale_verdict

KEY_REFUSALS = {
    "virtual_key_revoked": "your organisation revoked this laptop's key: run `governor login` again, or ask your admin",
    "virtual_key_disabled": "your organisation disabled this laptop's key: ask your admin to enable it",
    "virtual_key_expired": "this laptop's key has expired: run `governor login` again",
}


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
        if ctx.endpoint is not None and uses_client_credential(flow, self.state, ctx.endpoint.provider):
            ctx.authenticated = True  # passthrough: the client's own provider key goes upstream (docs/routing.md)
            self._check_org_key(flow)
            return
        key = presented_key(flow.request)
        if key is None:
            reply_error(flow, self.state.version, MISSING_KEY)
        elif not key_matches(key, self.state.local_key):
            reply_error(flow, self.state.version, WRONG_KEY)
        else:
            ctx.authenticated = True
            if ctx.endpoint is not None:
                self._check_org_key(flow)

    def _check_org_key(self, flow: http.HTTPFlow) -> None:
        """The laptop's org key must be usable: not revoked, not expired, the bundle not too stale."""
        state, now = self.state, time.time()
        code = key_refusal(state.bundle if state.bundle_source != "default" else None, state.revoked_code, now)
        if code is not None:
            reply_error(flow, state.version, GatewayError(code, KEY_REFUSALS.get(code, KEY_REFUSALS["virtual_key_revoked"])))
        elif stale_verdict(state.bundle, state.bundle_validated_at, now) == "stale_closed":
            reply_error(
                flow,
                state.version,
                GatewayError(
                    "control_plane_unreachable",
                    "the organisation's policy is too old to enforce and its control plane is unreachable; "
                    "check your network, then `governor doctor`",
                ),
            )
