"""What the fake answers: usage numbers, the text-or-tool choice, and how it is split into deltas.

Shared by the three wire modules, which only decide *how* a provider spells the
answer; this module decides *what* the answer is.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

# Provider names as they appear in the default answer text.
ANTHROPIC = "anthropic"
OPENAI = "openai"
GEMINI = "gemini"

# Dialect names; equal to `agent.core.dialects.Dialect` values (a StrEnum), but
# not imported from there: the fake must not inherit the product's mistakes.
D_ANTHROPIC = "anthropic"
D_OPENAI_CHAT = "openai_chat"
D_OPENAI_RESPONSES = "openai_responses"
D_GEMINI = "gemini"

DEFAULT_TEXT = "Hello from the fake provider. FAKE-OK [{provider}]"


@dataclass(frozen=True, slots=True)
class FakeUsage:
    """The token counts of one answer, in the Anthropic convention (like `agent.core.usage.Usage`).

    Each wire module spells them the way its provider does: OpenAI and Gemini
    report a prompt total that *includes* cached tokens; Gemini has no cache
    writes (they are folded into the prompt); OpenAI reports one undifferentiated
    `cache_write_tokens`; Anthropic reports thinking tokens only when the request
    carries the `thinking-token-count-…` beta.
    """

    input_tokens: int = 1200  # uncached, non-written prompt tokens
    cache_read_tokens: int = 3000
    cache_write_5m_tokens: int = 500
    cache_write_1h_tokens: int = 100
    output_tokens: int = 60  # all billed output, reasoning included
    reasoning_tokens: int = 20  # the reasoning part of output_tokens

    @property
    def cache_write_tokens(self) -> int:
        return self.cache_write_5m_tokens + self.cache_write_1h_tokens

    @property
    def prompt_total(self) -> int:
        """What OpenAI calls prompt_tokens and Gemini promptTokenCount: everything that went in."""
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens

    @property
    def visible_output_tokens(self) -> int:
        return self.output_tokens - self.reasoning_tokens


@dataclass(frozen=True, slots=True)
class TextAnswer:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    # Responses API `custom` tools (Codex's apply_patch) take a free-form string.
    custom: bool = False

    @property
    def arguments_json(self) -> str:
        # Models emit compact JSON; the SDKs re-parse it, so exact spacing is ours to pick.
        return json.dumps(self.arguments, separators=(",", ":"), ensure_ascii=False)

    @property
    def custom_input(self) -> str:
        value = self.arguments.get("input")
        return value if isinstance(value, str) else self.arguments_json


Scenario = TextAnswer | ToolCall

_FAKE_TOOL = re.compile(r"FAKE_TOOL\s+([A-Za-z0-9_.:\-]+)\s*")


def parse_fake_tool(text: str) -> ToolCall | None:
    """`FAKE_TOOL <name> <json-args>` anywhere in the text → a tool call.

    opencode wraps argv in quotes and backslash-escapes inner quotes, so a JSON
    that does not parse is retried with `\\"` unescaped.
    """
    m = _FAKE_TOOL.search(text)
    if m is None:
        return None
    rest = text[m.end() :]
    for candidate in (rest, rest.replace('\\"', '"')):
        start = candidate.find("{")
        if start == -1:
            break
        try:
            args, _ = json.JSONDecoder().raw_decode(candidate[start:])
        except json.JSONDecodeError:
            continue
        if isinstance(args, dict):
            return ToolCall(m.group(1), args)
    return ToolCall(m.group(1), {})


def _text_of(content: Any, text_types: tuple[str, ...]) -> str:
    """Text of a message's content: a string, or the text blocks of a list (tool results excluded)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            str(block.get("text", ""))
            for block in content
            if isinstance(block, dict) and block.get("type") in text_types
        ]
        return "\n".join(parts)
    return ""


def last_user_text(dialect: str, body: Any) -> str:
    """The text of the conversation's last turn if that turn is the user's, else "".

    Only the *last* non-system turn counts: after a tool call the last turn is a
    tool result, and answering it with the same tool call again would loop.
    Claude Code appends a `role:"system"` message after the user turn, and
    Codex/opencode put `developer` messages first, so those roles are skipped.
    """
    if not isinstance(body, dict):
        return ""
    if dialect == D_ANTHROPIC or dialect == D_OPENAI_CHAT:
        turns = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        turns = [m for m in turns if m.get("role") not in ("system", "developer")]
        if not turns or turns[-1].get("role") != "user":
            return ""
        return _text_of(turns[-1].get("content"), ("text",))
    if dialect == D_OPENAI_RESPONSES:
        items = body.get("input")
        if isinstance(items, str):
            return items
        items = [i for i in items or [] if isinstance(i, dict) and i.get("role") not in ("system", "developer")]
        if not items or items[-1].get("role") != "user":
            return ""
        return _text_of(items[-1].get("content"), ("input_text", "text"))
    if dialect == D_GEMINI:
        contents = [c for c in body.get("contents") or [] if isinstance(c, dict)]
        if not contents or contents[-1].get("role", "user") != "user":
            return ""
        parts = contents[-1].get("parts") or []
        return "\n".join(str(p["text"]) for p in parts if isinstance(p, dict) and "text" in p)
    return ""


def _custom_tool_names(body: Any) -> set[str]:
    tools = body.get("tools") if isinstance(body, dict) else None
    return {t.get("name", "") for t in tools or [] if isinstance(t, dict) and t.get("type") == "custom"}


def pick_scenario(dialect: str, body: Any, text: str) -> Scenario:
    call = parse_fake_tool(last_user_text(dialect, body))
    if call is None:
        return TextAnswer(text)
    if dialect == D_OPENAI_RESPONSES and call.name in _custom_tool_names(body):
        return ToolCall(call.name, call.arguments, custom=True)
    return call


def split(text: str, pieces: int) -> list[str]:
    """Split into `pieces` non-empty parts (fewer if the text is shorter) that join back to `text`."""
    pieces = max(1, min(pieces, len(text) or 1))
    size, extra = divmod(len(text), pieces)
    out, pos = [], 0
    for i in range(pieces):
        end = pos + size + (1 if i < extra else 0)
        out.append(text[pos:end])
        pos = end
    return out


@dataclass(frozen=True, slots=True)
class Reply:
    """Everything a wire module needs to spell one answer."""

    model: str
    scenario: Scenario
    usage: FakeUsage
    text_deltas: int
    tool_arg_pieces: int
    seq: int  # per-provider request counter, for ids
    created: int  # unix seconds, for `created` fields
    body: dict[str, Any]  # the parsed request
    headers: dict[str, str]  # lower-cased request headers

    def id(self, prefix: str, width: int = 24) -> str:
        """A provider-looking id that is unique per exchange, e.g. `msg_01FAKE…0007`."""
        tail = f"{self.seq:x}"
        return prefix + "FAKE" + tail.rjust(max(width - 4, len(tail)), "0")
