"""Where a call goes and with which credential: pure rewriting rules.

The client authenticates to the gateway with the local key; the provider sees
its own credential in its own header instead, and never the local key.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from agent.core.dialects import Provider

# Headers that carry the client's credential to us, or trace context we answer
# ourselves; none of them is forwarded.
CLIENT_AUTH_HEADERS = ("authorization", "x-api-key", "x-goog-api-key", "api-key")
HOP_HEADERS_NOT_FORWARDED = ("traceparent", "tracestate")


@dataclass(frozen=True, slots=True)
class Upstream:
    scheme: str
    host: str
    port: int
    path_prefix: str  # "" or e.g. "/openai" for a corporate proxy mounted under a path

    @classmethod
    def parse(cls, base_url: str) -> Upstream:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream base URL must be http(s)://host[:port][/prefix], got {base_url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        prefix = parts.path.rstrip("/")
        return cls(parts.scheme, parts.hostname, port, prefix)

    def path_for(self, client_path: str) -> str:
        """The upstream path for a client path like `/v1/messages?beta=true`.

        A base URL given with the API version (`https://api.openai.com/v1`, as
        OpenAI's own docs spell it) must not produce `/v1/v1/...`.
        """
        prefix = self.path_prefix
        for version in ("/v1beta", "/v1"):
            if prefix.endswith(version) and client_path.startswith(version + "/"):
                prefix = prefix[: -len(version)]
                break
        return prefix + client_path


def credential_headers(provider: Provider, api_key: str) -> dict[str, str]:
    """The header each provider's own API reads its key from."""
    if provider is Provider.ANTHROPIC:
        return {"x-api-key": api_key}
    if provider is Provider.GEMINI:
        return {"x-goog-api-key": api_key}
    return {"authorization": f"Bearer {api_key}"}
