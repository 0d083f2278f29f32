"""Judge one request against the bundle's policy: tools, MCP servers, URLs, models.

Order follows the reference gateway's interceptors: tools / MCP / URLs first,
then the model (aliases → `models_allowed` globs → `policy_rules.models`).
Each dimension is deny-first (any match blocks), then a non-null allow list
admits only what matches; matching is RE2 search (see `bundle.PatternRule`).

A denied tool or MCP server gets its rule's `action`: `reject` refuses the
call (403 `policy_violation`), `strip` removes it and lets the call proceed.
One denied item under a `reject` rule refuses the whole call.

The response side (a model calling a denied tool anyway) lives in
`toolguard.py`; `tool_denier` gives it the same judgement by name.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from agent.core.bundle import Bundle, ToolRule
from agent.core.dialects import PROVIDER_OF, Dialect
from agent.core.request_tools import Offer, find_urls, offers, strip_tools, tool_offer

__all__ = ["Decision", "evaluate_request", "resolve_model", "strip_tools", "tool_denier"]

# A `provider/model` alias target names the provider; anything else with a
# slash (an OpenRouter-style id) is a model name and left whole.
KNOWN_PROVIDERS = frozenset(
    {"anthropic", "openai", "gemini", "google", "vertex", "vertex_ai", "azure", "bedrock", "openai_codex"}
)


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict on one request.

    - `action`: "allow" (forward), "strip" (forward `body`), "reject" (answer
      `status` / `code` / `message` in the client's dialect, nothing upstream).
    - `body`: the rewritten request body when anything changed (tools
      stripped, model resolved in the body); None means forward the original
      bytes untouched.
    - `model`: the model to send upstream, bare (`claude-sonnet-4-5`);
      `model_in_path` says it belongs in the Gemini URL path, not the body.
    """

    action: Literal["allow", "strip", "reject"] = "allow"
    status: int = 200
    code: str | None = None  # "policy_violation" | "model_not_allowed"
    message: str | None = None  # e.g. 'tool "Bash" is blocked by policy'
    dimension: str | None = None  # "tools" | "mcp" | "urls" | "models" that refused
    subject: str | None = None  # the refused tool, server, URL or model
    stripped_tools: tuple[str, ...] = ()
    stripped_mcp_servers: tuple[str, ...] = ()
    body: dict[str, Any] | None = None
    model: str | None = None
    requested_model: str | None = None
    model_provider: str | None = None  # from an alias `provider/model`, else None
    model_in_path: bool = False

    @property
    def allowed(self) -> bool:
        return self.action != "reject"

    @property
    def model_changed(self) -> bool:
        return self.model != self.requested_model

    @property
    def stripped(self) -> list[str]:
        """For `X-Langwatch-Policy-Stripped`: tools by name, MCP servers as `mcp:<name>`."""
        return [*self.stripped_tools, *(f"mcp:{s}" for s in self.stripped_mcp_servers)]


def _reject(dimension: str, subject: str, message: str, code: str = "policy_violation", status: int = 403) -> Decision:
    return Decision("reject", status, code, message, dimension, subject)


def _judge_offer(bundle: Bundle, offer: Offer) -> tuple[ToolRule, str, str] | None:
    """(rule that refused, dimension, message) or None when the offer is admitted.

    An `mcp__server__tool` is judged by both rule sets; a `reject` verdict
    outranks a `strip` one, so stripping never weakens a refusal.
    """
    rules = bundle.policy_rules
    verdicts: list[tuple[ToolRule, str, str]] = []
    if offer.mcp_spellings and (reason := rules.mcp.check(*offer.mcp_spellings)):
        verdicts.append((rules.mcp, "mcp", f'MCP server "{offer.mcp_spellings[0]}" {reason}'))
    if offer.tool_spellings and (reason := rules.tools.check(*offer.tool_spellings)):
        verdicts.append((rules.tools, "tools", f'tool "{offer.name}" {reason}'))
    verdicts.sort(key=lambda v: v[0].action != "reject")
    return verdicts[0] if verdicts else None


def tool_denier(bundle: Bundle, dialect: Dialect) -> Callable[[str], bool]:
    """`is_denied(name)` for tool calls in responses, named as `toolguard` names them.

    Any denial counts here, whatever the rule's action: a model must not call a
    tool the policy strips.
    """
    rules = bundle.policy_rules
    if rules.tools.is_empty and rules.mcp.is_empty:
        return lambda _name: False

    def is_denied(name: str) -> bool:
        member = name.rpartition(".")[2] if dialect is Dialect.OPENAI_RESPONSES and "." in name else None
        return _judge_offer(bundle, tool_offer(name, member)) is not None

    return is_denied


def resolve_model(bundle: Bundle, model: str) -> tuple[str, str | None]:
    """Apply `model_aliases`; returns (bare model for upstream, provider or None)."""
    target = bundle.model_aliases.get(model, model)
    provider, sep, bare = target.partition("/")
    if sep and provider in KNOWN_PROVIDERS and bare:
        return bare, provider
    return target, None


def _judge_model(bundle: Bundle, dialect: Dialect, bare: str, provider: str | None) -> Decision | None:
    spellings = (bare, f"{provider or PROVIDER_OF[dialect].value}/{bare}")
    if bundle.models_allowed is not None and not any(
        fnmatch.fnmatchcase(s, glob) for glob in bundle.models_allowed for s in spellings
    ):
        return _reject("models", bare, f'model "{bare}" is not allowed for this key', "model_not_allowed", 400)
    if reason := bundle.policy_rules.models.check(*spellings):
        return _reject("models", bare, f'model "{bare}" {reason}')
    return None


def evaluate_request(bundle: Bundle, dialect: Dialect, body: dict[str, Any], model: str | None = None) -> Decision:
    """Judge a parsed request body. `model` is the Gemini path model; None reads `body["model"]`.

    Pure: `body` is never mutated; a changed body comes back in `Decision.body`.
    """
    rules = bundle.policy_rules
    strip_names: list[str] = []
    strip_servers: list[str] = []
    if not (rules.tools.is_empty and rules.mcp.is_empty):
        for offer in offers(dialect, body):
            verdict = _judge_offer(bundle, offer)
            if verdict is None:
                continue
            rule, dimension, message = verdict
            if rule.action == "reject":
                return _reject(dimension, offer.name, message)
            target = strip_servers if offer.kind == "mcp_server" else strip_names
            if offer.name not in target:
                target.append(offer.name)

    new_body: dict[str, Any] | None = None
    if strip_names or strip_servers:
        new_body = strip_tools(dialect, copy.deepcopy(body), strip_names, strip_servers)

    if not rules.urls.is_empty:
        # Judge what will be sent: a stripped MCP server's URL no longer is.
        for url in find_urls(new_body if new_body is not None else body):
            if reason := rules.urls.check(url):
                return _reject("urls", url, f'url "{url}" {reason}')

    in_path = dialect is Dialect.GEMINI
    requested = model if model is not None or in_path else body.get("model")
    resolved: str | None = None
    provider: str | None = None
    if isinstance(requested, str) and requested:
        resolved, provider = resolve_model(bundle, requested)
        refused = _judge_model(bundle, dialect, resolved, provider)
        if refused is not None:
            return refused
        if resolved != requested and not in_path:
            new_body = {**(new_body if new_body is not None else body), "model": resolved}

    return Decision(
        action="strip" if strip_names or strip_servers else "allow",
        stripped_tools=tuple(strip_names),
        stripped_mcp_servers=tuple(strip_servers),
        body=new_body,
        model=resolved,
        requested_model=requested if isinstance(requested, str) else None,
        model_provider=provider,
        model_in_path=in_path,
    )
