"""What each coding tool needs to talk to the agent instead of its provider.

Pure: given the gateway (base URL, local key), the tool's arguments and the
caller's environment, `plan()` says which executable to run with which argv,
which variables to set and clear, and which files (in the agent's own data
dir, never the user's) must exist first. `agent/launcher.py` does the I/O.

Per tool (see shared reference "real-clients"):

- claude: `ANTHROPIC_BASE_URL` + `ANTHROPIC_AUTH_TOKEN` (sent as Bearer). A set
  `ANTHROPIC_API_KEY` would win over the token, and Bedrock/Vertex switches
  would bypass the base URL, so they are cleared.
- codex: Codex ignores `OPENAI_BASE_URL` and only accepts a custom provider with
  `wire_api = "responses"`, so the provider is given as `-c` overrides (highest
  precedence, nothing written to ~/.codex); the key travels in the variable the
  provider's `env_key` names.
- gemini: `GOOGLE_GEMINI_BASE_URL` + `GEMINI_API_KEY`, and the CLI must have
  `security.auth.selectedType = "gemini-api-key"` or it picks the `gateway`
  auth type and exits 41. That setting goes into a system-settings file in the
  agent's data dir, named by `GEMINI_CLI_SYSTEM_SETTINGS_PATH` (system settings
  override the user's ~/.gemini, which stays untouched). An existing system
  settings file (MDM) is merged in, not replaced.
- opencode: `OPENCODE_CONFIG_CONTENT` (merged over the user's config by
  opencode itself) overrides the built-in anthropic/openai/google providers.
- aider: litellm prefers `OPENAI_BASE_URL` over `OPENAI_API_BASE`, so both are
  set; Anthropic models go through `ANTHROPIC_API_BASE`; Gemini keys are
  cleared so a Gemini model fails loudly instead of going around the agent.
- cursor: its requests are made from the app's own settings, which no
  variable reaches: print what to paste, then open it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TOOLS = ("aider", "claude", "codex", "cursor", "gemini", "opencode")
CODEX_PROVIDER = "governor"
KEY_VARIABLE = "GOVERNOR_LOCAL_KEY"
GEMINI_SETTINGS_FILE = "gemini-system-settings.json"


@dataclass(frozen=True, slots=True)
class Gateway:
    base_url: str  # http://127.0.0.1:8787, no trailing slash
    key: str


@dataclass(frozen=True, slots=True)
class Launch:
    argv: list[str]
    set_env: dict[str, str] = field(default_factory=dict)
    clear_env: tuple[str, ...] = ()
    # file name (relative to the agent's run dir) → content, written before exec
    files: dict[str, str] = field(default_factory=dict)
    # printed before the tool starts (Cursor's instructions, merge warnings)
    notice: str = ""

    def environment(self, base: Mapping[str, str], run_dir: str) -> dict[str, str]:
        env = {k: v for k, v in base.items() if k not in self.clear_env}
        env.update({k: v.replace("{run_dir}", run_dir) for k, v in self.set_env.items()})
        return env


def _claude(gw: Gateway, args: list[str], env: Mapping[str, str], existing: Mapping[str, str | None]) -> Launch:
    return Launch(
        argv=["claude", *args],
        set_env={"ANTHROPIC_BASE_URL": gw.base_url, "ANTHROPIC_AUTH_TOKEN": gw.key},
        clear_env=("ANTHROPIC_API_KEY", "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX"),
    )


def codex_overrides(gw: Gateway) -> list[str]:
    """`-c key=value` pairs (values are TOML) that select the agent as Codex's provider."""
    provider = f"model_providers.{CODEX_PROVIDER}"
    pairs = [
        f'model_provider="{CODEX_PROVIDER}"',
        f'{provider}.name="Governor"',
        f'{provider}.base_url="{gw.base_url}/v1"',
        f'{provider}.wire_api="responses"',
        f'{provider}.env_key="{KEY_VARIABLE}"',
    ]
    return [arg for pair in pairs for arg in ("-c", pair)]


def _codex(gw: Gateway, args: list[str], env: Mapping[str, str], existing: Mapping[str, str | None]) -> Launch:
    # Top-level -c flags are prepended to every subcommand's (`codex exec …` included).
    return Launch(argv=["codex", *codex_overrides(gw), *args], set_env={KEY_VARIABLE: gw.key})


def gemini_system_settings(existing: str | None) -> tuple[str, str]:
    """(settings JSON, notice): the org's system settings, if any, plus gemini-api-key auth."""
    notice = ""
    settings: dict[str, Any] = {}
    if existing:
        try:
            loaded = json.loads(existing)
            settings = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            notice = "governor: the Gemini CLI system settings file is not plain JSON; using only the gateway's auth setting"
    security = settings.setdefault("security", {})
    auth = security.setdefault("auth", {})
    auth["selectedType"] = "gemini-api-key"
    return json.dumps(settings, indent=2, sort_keys=True) + "\n", notice


def _gemini(gw: Gateway, args: list[str], env: Mapping[str, str], existing: Mapping[str, str | None]) -> Launch:
    content, notice = gemini_system_settings(existing.get("gemini_system_settings"))
    return Launch(
        argv=["gemini", *args],
        set_env={
            "GOOGLE_GEMINI_BASE_URL": gw.base_url,
            "GEMINI_API_KEY": gw.key,
            "GEMINI_CLI_SYSTEM_SETTINGS_PATH": "{run_dir}/" + GEMINI_SETTINGS_FILE,
        },
        # GOOGLE_API_KEY wins over GEMINI_API_KEY in the SDK; Vertex bypasses the base URL.
        clear_env=("GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_CLOUD_PROJECT"),
        files={GEMINI_SETTINGS_FILE: content},
        notice=notice,
    )


def opencode_config(gw: Gateway, key_ref: str) -> dict[str, Any]:
    """Overrides for opencode's built-in providers; `key_ref` is the key or `{env:VAR}`."""

    def provider(path: str) -> dict[str, Any]:
        return {"options": {"baseURL": gw.base_url + path, "apiKey": key_ref}}

    return {"provider": {"anthropic": provider("/v1"), "google": provider("/v1beta"), "openai": provider("/v1")}}


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _opencode(gw: Gateway, args: list[str], env: Mapping[str, str], existing: Mapping[str, str | None]) -> Launch:
    notice = ""
    base: dict[str, Any] = {}
    if env.get("OPENCODE_CONFIG_CONTENT"):
        try:
            loaded = json.loads(env["OPENCODE_CONFIG_CONTENT"])
            base = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            notice = "governor: ignoring OPENCODE_CONFIG_CONTENT, which is not JSON"
    content = _deep_merge(base, opencode_config(gw, gw.key))
    return Launch(
        argv=["opencode", *args],
        set_env={"OPENCODE_CONFIG_CONTENT": json.dumps(content, separators=(",", ":"))},
        notice=notice,
    )


def _aider(gw: Gateway, args: list[str], env: Mapping[str, str], existing: Mapping[str, str | None]) -> Launch:
    return Launch(
        argv=["aider", *args],
        set_env={
            "OPENAI_API_BASE": gw.base_url + "/v1",
            "OPENAI_BASE_URL": gw.base_url + "/v1",
            "OPENAI_API_KEY": gw.key,
            "ANTHROPIC_API_BASE": gw.base_url,
            "ANTHROPIC_API_KEY": gw.key,
        },
        clear_env=("ANTHROPIC_BASE_URL", "GEMINI_API_KEY", "GOOGLE_API_KEY"),
    )


def cursor_instructions(gw: Gateway) -> str:
    return (
        "Cursor takes its model endpoint from its own settings, not from the environment.\n"
        "In Cursor: Settings → Models → API Keys → OpenAI API Key, then:\n"
        f"  OpenAI API Key:            {gw.key}\n"
        f"  Override OpenAI Base URL:  {gw.base_url}/v1\n"
        "(`governor setup cursor` prints this again and copies the key to the clipboard.)"
    )


def _cursor(gw: Gateway, args: list[str], env: Mapping[str, str], existing: Mapping[str, str | None]) -> Launch:
    return Launch(argv=["cursor", *args], notice=cursor_instructions(gw))


_PLANNERS = {
    "aider": _aider,
    "claude": _claude,
    "codex": _codex,
    "cursor": _cursor,
    "gemini": _gemini,
    "opencode": _opencode,
}


def plan(
    tool: str,
    args: list[str],
    gw: Gateway,
    env: Mapping[str, str],
    existing: Mapping[str, str | None] | None = None,
) -> Launch:
    """The launch for `tool`. `existing` carries files the plan merges with
    (`gemini_system_settings`: the current system settings text, or None)."""
    if tool not in _PLANNERS:
        raise ValueError(f"unknown tool {tool!r}; one of {', '.join(TOOLS)}")
    return _PLANNERS[tool](gw, list(args), env, existing or {})


def blocking_budgets(status: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The `block` budgets that are used up: a call through them would be refused."""
    out = []
    for budget in status.get("budgets") or []:
        if budget.get("on_breach", "block") != "block":
            continue
        remaining = budget.get("remaining_usd")
        pct = budget.get("pct")
        if (remaining is not None and remaining <= 0) or (remaining is None and pct is not None and pct >= 100):
            out.append(dict(budget))
    return out
