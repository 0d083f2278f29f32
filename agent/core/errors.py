"""Gateway-authored error envelopes, in the dialect of the client that called.

Shapes (the reference gateway's contract, `shared/reference/`):
- OpenAI and default: `{"error": {"type", "code", "message", ...}}`
- Anthropic: the same plus a top-level `"type": "error"`, which is what the
  Anthropic SDKs and Claude Code look for.
- Gemini: Google's `{"error": {"code": <http status>, "message", "status"}}`,
  with the gateway code as an `ErrorInfo.reason` detail.
Every gateway-authored error also carries `X-Langwatch-Handled-Error: <code>` so
a client can tell it from a provider error, which passes through untouched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from agent.core.dialects import Dialect

STATUS_OF_CODE: dict[str, int] = {
    "bad_request": 400,
    "missing_model": 400,
    "model_not_allowed": 400,
    "no_provider_configured": 400,
    "invalid_api_key": 401,
    "budget_exceeded": 402,
    "policy_violation": 403,
    "forbidden_origin": 403,
    "forbidden_host": 403,
    "virtual_key_revoked": 403,
    "virtual_key_disabled": 403,
    "virtual_key_expired": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "rate_limited": 429,
    "internal_error": 500,
    "provider_error": 502,
    "chain_exhausted": 502,
    "control_plane_unreachable": 503,
    "circuit_open": 503,
    "draining": 503,
    "provider_timeout": 504,
}

# google.rpc.Code names, as Google's own error bodies spell them.
_GOOGLE_STATUS: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    402: "RESOURCE_EXHAUSTED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    413: "INVALID_ARGUMENT",
    415: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

HANDLED_ERROR_HEADER = "X-Langwatch-Handled-Error"


@dataclass(frozen=True, slots=True)
class GatewayError:
    code: str
    message: str
    status: int = 0  # 0: take it from STATUS_OF_CODE
    type: str = ""  # "" : same as code (the seed sets both)
    meta: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def http_status(self) -> int:
        return self.status or STATUS_OF_CODE.get(self.code, 500)


def render(error: GatewayError, dialect: Dialect | None) -> tuple[int, bytes, dict[str, str]]:
    """Status, JSON body and headers for `error` as `dialect`'s clients expect it."""
    status = error.http_status
    if dialect is Dialect.GEMINI:
        body: dict[str, Any] = {
            "error": {
                "code": status,
                "message": error.message,
                "status": _GOOGLE_STATUS.get(status, "UNKNOWN"),
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": error.code,
                        "domain": "governor",
                        "metadata": {k: str(v) for k, v in error.meta.items()},
                    }
                ],
            }
        }
    else:
        inner: dict[str, Any] = {"type": error.type or error.code, "code": error.code, "message": error.message}
        if error.meta:
            inner["meta"] = error.meta
        body = {"type": "error", "error": inner} if dialect is Dialect.ANTHROPIC else {"error": inner}
    headers = {"Content-Type": "application/json", HANDLED_ERROR_HEADER: error.code, **error.headers}
    return status, json.dumps(body, separators=(",", ":")).encode(), headers


# The seed's 401, byte for byte: integrators diff against it.
MISSING_KEY = GatewayError(
    code="missing_api_key",
    type="invalid_api_key",
    status=401,
    message="missing API key; supply Authorization: Bearer vk-lw-... or x-api-key",
)
WRONG_KEY = GatewayError(
    code="invalid_api_key",
    status=401,
    message="invalid API key; use the key shown by `governor key` "
    "(Authorization: Bearer <key>, x-api-key, x-goog-api-key or ?key=)",
)
