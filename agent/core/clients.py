"""Which coding tool made a call, from its User-Agent, for the spend view."""

from __future__ import annotations

# Ordered: the first marker found wins (opencode and aider embed SDK agents).
_MARKERS: tuple[tuple[str, str], ...] = (
    ("claude-cli", "claude-code"),
    ("codex_", "codex"),
    ("codex/", "codex"),
    ("geminicli", "gemini-cli"),
    ("opencode", "opencode"),
    ("aider", "aider"),
    ("cursor", "cursor"),
    ("anthropic/python", "anthropic-sdk"),
    ("anthropic/js", "anthropic-sdk"),
    ("openai/python", "openai-sdk"),
    ("openai/js", "openai-sdk"),
    ("google-genai-sdk", "google-genai-sdk"),
    ("bun/", "claude-code"),
)


def client_name(user_agent: str | None) -> str:
    ua = (user_agent or "").lower()
    for marker, name in _MARKERS:
        if marker in ua:
            return name
    return "other" if ua else "unknown"
