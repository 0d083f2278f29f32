"""The governance bundle: the org's policy, budgets and prices for this key.

Shaped like the reference gateway's config payload (notes §1–§3) minus the
provider credentials, so the same JSON can come from the control plane or from
a local file. Unknown fields are kept (`extra="allow"`) and ignored, so a newer
control plane never breaks an older agent. An empty bundle (`Bundle()`) denies
nothing and sets no budget.

`parse_bundle` is the only way in from bytes: it refuses an invalid bundle
with a `BundleError` whose message names the field path
(`policy_rules.tools.deny[1]: invalid RE2 regex ...`), so the caller can keep
the last good bundle and say exactly what to fix.
"""

from __future__ import annotations

import functools
import json
from typing import Annotated, Any, Literal

import re2
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "Budget",
    "Bundle",
    "BundleError",
    "CacheRule",
    "Fallback",
    "ModelPrice",
    "PatternRule",
    "PolicyRules",
    "RateLimits",
    "ToolRule",
    "compile_re2",
    "parse_bundle",
]


class BundleError(ValueError):
    """The bundle cannot be used; `message` names the offending field path."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # errors are reported as BundleError, not on stderr


@functools.lru_cache(maxsize=4096)
def compile_re2(pattern: str) -> Any:
    """Compile once per distinct pattern; bundles are re-parsed on every sync."""
    return re2.compile(pattern, _RE2_OPTIONS)


def _valid_re2(pattern: str) -> str:
    try:
        compile_re2(pattern)
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(f"invalid RE2 regex {pattern!r}: {detail}") from None
    return pattern


Re2Pattern = Annotated[str, AfterValidator(_valid_re2)]
NonNegativeInt = Annotated[int, Field(ge=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class PatternRule(_Model):
    """`deny` first (any match blocks), then a non-null `allow` admits only matches.

    Matching is RE2 search (unanchored), as Go's `regexp.MatchString` on the
    org's gateway, so a rule means the same thing on the laptop.
    """

    deny: list[Re2Pattern] = Field(default_factory=list)
    allow: list[Re2Pattern] | None = None

    @field_validator("deny", mode="before")
    @classmethod
    def _null_deny_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value

    @property
    def is_empty(self) -> bool:
        return not self.deny and self.allow is None

    def check(self, *spellings: str) -> str | None:
        """None when admitted, else the reason: "is blocked by policy" / "is not in allowlist".

        Several spellings of one subject (bare and `provider/model`, a
        namespaced tool and its member name): any denied spelling denies, any
        allowed spelling admits.
        """
        for pattern in self.deny:
            rx = compile_re2(pattern)
            if any(rx.search(s) for s in spellings):
                return "is blocked by policy"
        if self.allow is not None:
            allowed = any(compile_re2(p).search(s) for p in self.allow for s in spellings)
            if not allowed:
                return "is not in allowlist"
        return None


class ToolRule(PatternRule):
    """Tools and MCP servers can also be stripped from the request instead of refused."""

    action: Literal["reject", "strip"] = "reject"


class PolicyRules(_Model):
    tools: ToolRule = Field(default_factory=ToolRule)
    mcp: ToolRule = Field(default_factory=ToolRule)
    urls: PatternRule = Field(default_factory=PatternRule)
    models: PatternRule = Field(default_factory=PatternRule)

    @field_validator("tools", "mcp", "urls", "models", mode="before")
    @classmethod
    def _null_rule_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value


class Budget(_Model):
    id: str
    scope: Literal["organization", "team", "project", "virtual_key", "principal", "group", "attributed_user"]
    scope_id: str
    principal_id: str | None = None
    per_user: bool = False
    window: Literal["minute", "hour", "day", "week", "month", "total", "manual"]
    limit_micro_usd: NonNegativeInt
    spent_micro_usd: NonNegativeInt = 0
    resets_at: int | None = None  # unix seconds; null for total / manual windows
    on_breach: Literal["block", "warn"] = "block"
    provider_key: str | None = None


class RateLimits(_Model):
    rpm: NonNegativeInt | None = None
    tpm: NonNegativeInt | None = None
    rpd: NonNegativeInt | None = None


class ModelPrice(_Model):
    """Integer nano-USD per token. A missing cache price is left to the pricing module."""

    input: NonNegativeInt
    output: NonNegativeInt
    cache_read: NonNegativeInt | None = None
    cache_write_5m: NonNegativeInt | None = None
    cache_write_1h: NonNegativeInt | None = None


class Fallback(_Model):
    chain: list[str] = Field(default_factory=list)
    max_attempts: Annotated[int, Field(ge=1)] | None = None


class CacheMatchers(_Model):
    vk_id: str | None = None
    vk_tags: list[str] | None = None
    vk_prefix: str | None = None
    principal_id: str | None = None
    model: str | None = None
    request_metadata: dict[str, Any] | None = None


class CacheAction(_Model):
    mode: Literal["respect", "force", "disable"]
    ttl: NonNegativeInt | None = None
    salt: str | None = None


class CacheRule(_Model):
    id: str
    priority: int = 0
    matchers: CacheMatchers = Field(default_factory=CacheMatchers)
    action: CacheAction


class Bundle(_Model):
    revision: str = "0"
    vk_id: str | None = None
    status: str = "active"
    project_id: str | None = None
    project_otlp_token: str | None = None
    principal_id: str | None = None
    organization_id: str | None = None
    team_id: str | None = None
    vk_tags: list[str] = Field(default_factory=list)
    expires_at: int | None = None  # unix seconds
    model_aliases: dict[str, str] = Field(default_factory=dict)
    models_allowed: list[str] | None = None  # fnmatch globs; null = any model
    policy_rules: PolicyRules = Field(default_factory=PolicyRules)
    budgets: list[Budget] = Field(default_factory=list)
    rate_limits: RateLimits = Field(default_factory=RateLimits)
    prices: dict[str, ModelPrice] = Field(default_factory=dict)  # model or glob -> price
    fallback: Fallback = Field(default_factory=Fallback)
    cache_rules: list[CacheRule] = Field(default_factory=list)
    max_stale_s: NonNegativeInt | None = None  # null: never stale
    on_stale: Literal["fail_open", "fail_closed"] = "fail_open"
    # Traces carry the prompt and the answer (secrets redacted) only when the org asks.
    capture_content: bool = False

    @field_validator("revision", mode="before")
    @classmethod
    def _revision_as_text(cls, value: Any) -> Any:
        # The control plane sends "145"; older payloads an integer. Compare as text.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator(
        "vk_tags", "model_aliases", "budgets", "prices", "cache_rules", "policy_rules",
        "rate_limits", "fallback", mode="before",
    )  # fmt: skip
    @classmethod
    def _null_is_default(cls, value: Any, info: Any) -> Any:
        # The materialiser emits explicit nulls for unset sections.
        if value is not None:
            return value
        return {} if info.field_name in ("model_aliases", "prices", "policy_rules", "rate_limits", "fallback") else []


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "bundle"


def parse_bundle(data: bytes | str | dict[str, Any]) -> Bundle:
    """Validate a bundle from JSON bytes/text or a decoded dict; BundleError names the field."""
    if isinstance(data, (bytes, bytearray, str)):
        try:
            data = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BundleError(f"bundle is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BundleError(f"bundle must be a JSON object, got {type(data).__name__}")
    try:
        return Bundle.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            msg = str(err["msg"]).removeprefix("Value error, ")
            problems.append(f"{_field_path(err['loc'])}: {msg}")
        first = _field_path(exc.errors()[0]["loc"])
        raise BundleError("invalid bundle: " + "; ".join(problems), field=first) from None
