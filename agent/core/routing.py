"""Where a call goes: upstream modes, the fallback plan and the circuit breaker.

Pure: no I/O, the clock is passed in. The route addon asks `Router.plan` for
the ordered list of upstreams a call may try; the forwarder reports each
attempt's outcome back to the breaker.

- mode `direct`: the provider's API with a key from the keychain;
  `gateway`: the org's AI gateway with the personal VK; `passthrough`: the
  provider's API with the client's own credential, forwarded untouched.
- fallback: the primary upstream first, then the bundle's `fallback.chain`
  entries that speak the call's dialect, at most `max_attempts` in all.
  An attempt fails over on 5xx, 429, 404, timeout or a network error, only
  before the first byte reached the client; other 4xx are final.
- breaker: an upstream with `threshold` failures (5xx, timeout, network)
  inside `window_s` is skipped for `cooldown_s`; then calls go through again
  (half-open) and the next outcome closes or re-opens it.
"""

from __future__ import annotations

import enum
import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.core.dialects import Dialect, Endpoint, Provider, classify
from agent.core.upstream import Upstream, credential_headers


class Mode(enum.StrEnum):
    DIRECT = "direct"
    GATEWAY = "gateway"
    PASSTHROUGH = "passthrough"


ALL_DIALECTS = frozenset(Dialect)
DIALECTS_OF: dict[Provider, frozenset[Dialect]] = {
    Provider.ANTHROPIC: frozenset({Dialect.ANTHROPIC}),
    Provider.OPENAI: frozenset({Dialect.OPENAI_CHAT, Dialect.OPENAI_RESPONSES}),
    Provider.GEMINI: frozenset({Dialect.GEMINI}),
}
GATEWAY = "gateway"
AZURE_OPENAI = "azure_openai"
# Bundle chains name upstreams by control-plane ids (`mp_anthropic`) or types (`azure`).
_ALIASES = {"azure": AZURE_OPENAI, "azure_openai": AZURE_OPENAI, "org_gateway": GATEWAY, "google": "gemini"}


class Scheme(enum.StrEnum):
    NATIVE = "native"  # the provider's own header (x-api-key, Bearer, x-goog-api-key)
    AZURE = "azure"  # Azure OpenAI's `api-key` header
    CLIENT = "client"  # the client's own credential, untouched


@dataclass(frozen=True, slots=True)
class Target:
    """One upstream a call can be sent to."""

    name: str
    upstream: Upstream
    dialects: frozenset[Dialect]
    scheme: Scheme = Scheme.NATIVE
    query: tuple[tuple[str, str], ...] = ()  # appended to every path (Azure's api-version)

    def serves(self, dialect: Dialect) -> bool:
        return dialect in self.dialects

    def path(self, client_path: str) -> str:
        path = self.upstream.path_for(client_path)
        for key, value in self.query:
            path += ("&" if "?" in path else "?") + f"{key}={value}"
        return path

    def url(self, client_path: str) -> str:
        u = self.upstream
        return f"{u.scheme}://{u.host}:{u.port}{self.path(client_path)}"

    def auth_headers(self, provider: Provider, credential: str) -> dict[str, str]:
        if self.scheme is Scheme.AZURE:
            return {"api-key": credential}
        return credential_headers(provider, credential)


def chain_name(name: str) -> str:
    """A bundle chain entry as one of our target names (`mp_anthropic` → `anthropic`)."""
    key = name.strip().lower()
    key = key[3:] if key.startswith("mp_") else key
    return _ALIASES.get(key, key)


def retryable_status(status: int) -> bool:
    """Statuses that send a call to the next upstream (before its first byte)."""
    return status >= 500 or status in (404, 429)


def breaker_counts_status(status: int) -> bool:
    """Only server faults count against an upstream's health; 429 and 404 do not."""
    return status >= 500


@dataclass
class CircuitBreaker:
    threshold: int = 5
    window_s: float = 60.0
    cooldown_s: float = 30.0
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _open_until: dict[str, float] = field(default_factory=dict)
    _reopened: set[str] = field(default_factory=set)

    def allows(self, name: str, now: float) -> bool:
        until = self._open_until.get(name)
        return until is None or now >= until

    def state(self, name: str, now: float) -> str:
        until = self._open_until.get(name)
        if until is None:
            return "closed"
        return "open" if now < until else "half_open"

    def success(self, name: str) -> None:
        self._open_until.pop(name, None)
        self._failures.pop(name, None)

    def failure(self, name: str, now: float) -> bool:
        """Count a failure; True when this one opened the circuit."""
        if name in self._open_until:  # half-open trial failed (or a straggler): open again
            self._open_until[name] = now + self.cooldown_s
            return True
        recent = self._failures.setdefault(name, deque())
        recent.append(now)
        while recent and recent[0] <= now - self.window_s:
            recent.popleft()
        if len(recent) >= self.threshold:
            recent.clear()
            self._open_until[name] = now + self.cooldown_s
            return True
        return False

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            name: {"state": self.state(name, now), "open_for_s": round(max(0.0, until - now), 1)}
            for name, until in sorted(self._open_until.items())
        }


@dataclass(frozen=True, slots=True)
class Plan:
    attempts: tuple[Target, ...]
    skipped: tuple[str, ...] = ()  # circuit open
    chained: bool = False  # a fallback chain applies (the forwarder walks it)
    # Each attempt's place in the chain: how many upstreams were passed over to reach it.
    positions: tuple[int, ...] = (0,)


@dataclass
class Router:
    """The laptop's upstreams and the breaker's memory of them."""

    targets: dict[str, Target]
    default_mode: Mode = Mode.DIRECT
    modes: dict[Provider, Mode] = field(default_factory=dict)
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)

    def mode(self, provider: Provider, bundle_modes: Mapping[str, Any] | None = None) -> Mode:
        """Configured per provider; a bundle's `upstream_modes` wins (the org decides)."""
        if bundle_modes:
            chosen = bundle_modes.get(provider.value, bundle_modes.get("default"))
            if chosen in Mode.__members__.values():
                return Mode(chosen)
        return self.modes.get(provider, self.default_mode)

    def primary(self, provider: Provider, mode: Mode) -> Target | None:
        if mode is Mode.GATEWAY:
            return self.targets.get(GATEWAY)
        direct = self.targets.get(provider.value)
        if direct is None or mode is Mode.DIRECT:
            return direct
        return Target(direct.name, direct.upstream, direct.dialects, Scheme.CLIENT)

    def plan(
        self, primary: Target, dialect: Dialect, chain: list[str], max_attempts: int | None, now: float
    ) -> Plan:
        candidates = [primary]
        for entry in chain:
            target = self.targets.get(chain_name(entry))
            if target is not None and target.serves(dialect) and all(t.name != target.name for t in candidates):
                candidates.append(target)
        if max_attempts is not None:
            candidates = candidates[:max_attempts]
        if len(candidates) == 1:
            return Plan((primary,))
        open_now = {t.name for t in candidates if not self.breaker.allows(t.name, now)}
        allowed = tuple(t for t in candidates if t.name not in open_now)
        positions = tuple(i for i, t in enumerate(candidates) if t.name not in open_now)
        return Plan(allowed, tuple(t.name for t in candidates if t.name in open_now), True, positions)

    def to_json(self, now: float, bundle_modes: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return {
            "modes": {p.value: self.mode(p, bundle_modes).value for p in Provider},
            "upstreams": {
                name: {"url": t.url("").rstrip("/"), "dialects": sorted(d.value for d in t.dialects)}
                for name, t in sorted(self.targets.items())
            },
            "circuits": self.breaker.to_json(now),
        }


# -- mid-stream failure: the dialect's own terminal error event ----------------------


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def terminal_error(dialect: Dialect, message: str, *, gemini_array: bool = False, sequence: int = 0) -> bytes:
    """The bytes that end a cut stream the way the provider itself reports an in-stream failure."""
    if dialect is Dialect.ANTHROPIC:
        return b"event: error\ndata: " + _json({"type": "error", "error": {"type": "api_error", "message": message}}) + b"\n\n"
    if dialect is Dialect.OPENAI_CHAT:
        error = {"error": {"message": message, "type": "provider_error", "code": "provider_error"}}
        return b"data: " + _json(error) + b"\n\ndata: [DONE]\n\n"
    if dialect is Dialect.OPENAI_RESPONSES:
        error = {"type": "error", "code": "provider_error", "message": message, "param": None, "sequence_number": sequence}
        return b"event: error\ndata: " + _json(error) + b"\n\n"
    error = _json({"error": {"code": 502, "message": message, "status": "UNAVAILABLE"}})
    if gemini_array:
        return b",\r\n" + error + b"]"
    return b"data: " + error + b"\r\n\r\n"


# -- intercept mode: which hosts are decrypted --------------------------------------

# LLM provider API hosts decrypted in intercept mode; every other host is tunnelled untouched.
INTERCEPT_HOSTS = (
    "api.anthropic.com",
    "api.openai.com",
    "chatgpt.com",  # Codex on a ChatGPT login: /backend-api/codex/responses
    "generativelanguage.googleapis.com",
    "api2.cursor.sh",
    "api3.cursor.sh",
    "api4.cursor.sh",
)
_CODEX_BACKEND = "/backend-api/codex/"


def host_listed(host: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """Exact names, or `*.example.com` for any subdomain. Case-insensitive, port ignored."""
    host = host.lower().rstrip(".")
    for pattern in patterns:
        pattern = pattern.lower().strip()
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif host == pattern:
            return True
    return False


def classify_intercepted(host: str, method: str, path: str, headers: Mapping[str, str], query_key: bool) -> Endpoint | None:
    """The endpoint of a decrypted call, from its host and path (None: forwarded ungoverned)."""
    if host.lower() == "chatgpt.com" and path.startswith(_CODEX_BACKEND):
        path = "/v1/" + path[len(_CODEX_BACKEND):]
    endpoint = classify(method, path, headers, query_key)
    if endpoint is None:
        return None
    if endpoint.operation.value == "list_models":
        return None  # model lists are not metered; leave them alone
    return endpoint
