"""What a request offers the model: its tools, MCP servers and URLs, per dialect.

Naming, so one rule reads the same in every dialect:
- a tool is its declared name (`Bash`, `exec_command`); a built-in without a
  name is its type (`web_search`, `tool_search`) or, in Gemini, its key
  (`googleSearch`, `codeExecution`);
- a Responses `namespace` member is `<namespace>.<member>` (the spelling a
  `function_call` carries as `namespace` + `name`); `tools` rules see both that
  and the bare member name, like models are judged bare and `provider/model`;
- Claude Code's MCP tools `mcp__<server>__<tool>`: `tools` rules see the full
  name, `mcp` rules the server part (up to the next `__`);
- an MCP server (Anthropic `mcp_servers[]`, an Anthropic `mcp_toolset`, a
  Responses `mcp` tool) is its name / `server_label`; `mcp` rules also see its URL.

`strip_tools` removes tools and MCP servers in place, and repairs what would
otherwise make the provider refuse the request (a `tool_choice` forcing a
removed tool, an empty `tools` array, `parallel_tool_calls` without tools).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import re2

from agent.core.dialects import Dialect

_URL = re2.compile(r"(?i)https?://[^\s<>\"'`{}|\\^]+")
_URL_TRAILING = ".,;:!?)]}>'\""


@dataclass(frozen=True, slots=True)
class Offer:
    kind: Literal["tool", "mcp_server"]
    name: str  # the name reported and passed to strip_tools
    tool_spellings: tuple[str, ...] = ()  # what `tools` rules see
    mcp_spellings: tuple[str, ...] = ()  # what `mcp` rules see


def mcp_server_of(tool_name: str) -> str | None:
    """`mcp__github__create_issue` → `github` (Claude Code's MCP tool naming)."""
    if not tool_name.startswith("mcp__"):
        return None
    server, sep, _tool = tool_name[5:].partition("__")
    return server if sep and server else None


def tool_offer(name: str, member: str | None = None) -> Offer:
    spellings = (name, member) if member else (name,)
    server = mcp_server_of(name)
    return Offer("tool", name, spellings, (server,) if server else ())


def _server_offer(name: str, *more: Any) -> Offer:
    return Offer("mcp_server", name, (), (name, *(m for m in more if isinstance(m, str) and m)))


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _chat_tool_name(tool: dict[str, Any]) -> str | None:
    kind = tool.get("type", "function")
    name = _dict(tool.get(kind)).get("name") if kind in ("function", "custom") else kind
    return name if isinstance(name, str) else None


def _responses_tool_name(tool: dict[str, Any]) -> str | None:
    name = tool.get("name") if tool.get("type") in ("function", "custom", None) else tool.get("type")
    return name if isinstance(name, str) else None


def _gemini_declarations_key(tool: dict[str, Any]) -> str | None:
    for key in ("functionDeclarations", "function_declarations"):
        if key in tool:
            return key
    return None


def offers(dialect: Dialect, body: dict[str, Any]) -> list[Offer]:
    """Every tool and MCP server the request makes available to the model."""
    found: list[Offer] = []
    tools = [t for t in _list(body.get("tools")) if isinstance(t, dict)]
    if dialect is Dialect.OPENAI_CHAT:
        names = [_chat_tool_name(t) for t in tools] + [_dict(f).get("name") for f in _list(body.get("functions"))]
        found += [tool_offer(n) for n in names if isinstance(n, str)]
    elif dialect is Dialect.OPENAI_RESPONSES:
        for tool in tools:
            if tool.get("type") == "namespace":
                ns = tool.get("name", "")
                for member in _list(tool.get("tools")):
                    m = _dict(member).get("name")
                    if isinstance(m, str):
                        found.append(tool_offer(f"{ns}.{m}", m))
            elif tool.get("type") == "mcp":
                label = tool.get("server_label")
                if isinstance(label, str):
                    found.append(_server_offer(label, tool.get("server_url"), tool.get("connector_id")))
            elif (name := _responses_tool_name(tool)) is not None:
                found.append(tool_offer(name))
    elif dialect is Dialect.ANTHROPIC:
        for tool in tools:
            if tool.get("type") == "mcp_toolset":
                server = tool.get("mcp_server_name")
                if isinstance(server, str):
                    found.append(_server_offer(server))
            elif isinstance(tool.get("name"), str):
                found.append(tool_offer(tool["name"]))
        for server in _list(body.get("mcp_servers")):
            name = _dict(server).get("name")
            if isinstance(name, str):
                found.append(_server_offer(name, server.get("url")))
    elif dialect is Dialect.GEMINI:
        for tool in tools:
            for key, value in tool.items():
                if key in ("functionDeclarations", "function_declarations"):
                    names = [_dict(d).get("name") for d in _list(value)]
                    found += [tool_offer(n) for n in names if isinstance(n, str)]
                else:  # a built-in: googleSearch, codeExecution, urlContext, …
                    found.append(tool_offer(key))
    return found


def _strings(value: Any) -> Iterator[str]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def find_urls(body: Any) -> list[str]:
    """Every http(s) URL in any string of the body, in no particular order, deduplicated."""
    seen: dict[str, None] = {}
    for text in _strings(body):
        if "://" not in text:  # most strings carry no URL; skip the regex for them
            continue
        for url in _URL.findall(text):
            seen[url.rstrip(_URL_TRAILING)] = None
    return list(seen)


def strip_tools(
    dialect: Dialect,
    body: dict[str, Any],
    tools: Collection[str],
    mcp_servers: Collection[str] = (),
) -> dict[str, Any]:
    """Remove the named tools and MCP servers from `body` in place; returns `body`."""
    if dialect is Dialect.OPENAI_CHAT:
        _strip_chat(body, tools)
    elif dialect is Dialect.OPENAI_RESPONSES:
        _strip_responses(body, tools, mcp_servers)
    elif dialect is Dialect.ANTHROPIC:
        _strip_anthropic(body, tools, mcp_servers)
    elif dialect is Dialect.GEMINI:
        _strip_gemini(body, tools)
    return body


def _drop_empty_tools(body: dict[str, Any], *companions: str) -> None:
    # Providers refuse `tools: []` and a tool_choice / parallel_tool_calls without tools.
    if "tools" in body and not body["tools"]:
        for key in ("tools", *companions):
            body.pop(key, None)


def _strip_chat(body: dict[str, Any], names: Collection[str]) -> None:
    if "tools" in body:
        body["tools"] = [t for t in _list(body["tools"]) if _chat_tool_name(_dict(t)) not in names]
    if "functions" in body:  # the legacy spelling
        body["functions"] = [f for f in _list(body["functions"]) if _dict(f).get("name") not in names]
        if not body["functions"]:
            body.pop("functions")
            body.pop("function_call", None)
    if _dict(body.get("function_call")).get("name") in names:
        body.pop("function_call")
    choice = _dict(body.get("tool_choice"))
    if choice.get("type") == "allowed_tools":
        allowed = _dict(choice.get("allowed_tools"))
        allowed["tools"] = [t for t in _list(allowed.get("tools")) if _chat_tool_name(_dict(t)) not in names]
        if not allowed["tools"]:
            body.pop("tool_choice")
    elif choice and _chat_tool_name(choice) in names:
        body.pop("tool_choice")
    _drop_empty_tools(body, "tool_choice", "parallel_tool_calls")


def _responses_keeps(tool: dict[str, Any], names: Collection[str], servers: Collection[str]) -> bool:
    if tool.get("type") == "mcp":
        return tool.get("server_label") not in servers
    return _responses_tool_name(tool) not in names


def _strip_responses(body: dict[str, Any], names: Collection[str], servers: Collection[str]) -> None:
    kept = []
    for tool in _list(body.get("tools")):
        tool = _dict(tool)
        if tool.get("type") == "namespace":
            ns = tool.get("name", "")
            members = [m for m in _list(tool.get("tools")) if f"{ns}.{_dict(m).get('name')}" not in names]
            if members:
                kept.append({**tool, "tools": members})
        elif _responses_keeps(tool, names, servers):
            kept.append(tool)
    if "tools" in body:
        body["tools"] = kept
    choice = _dict(body.get("tool_choice"))
    if choice.get("type") == "allowed_tools":
        choice["tools"] = [t for t in _list(choice.get("tools")) if _responses_keeps(_dict(t), names, servers)]
        if not choice["tools"]:
            body.pop("tool_choice")
    elif choice and not _responses_keeps(choice, names, servers):
        body.pop("tool_choice")
    _drop_empty_tools(body, "tool_choice", "parallel_tool_calls")


def _strip_anthropic(body: dict[str, Any], names: Collection[str], servers: Collection[str]) -> None:
    if "tools" in body:
        body["tools"] = [
            t
            for t in _list(body["tools"])
            if not (_dict(t).get("name") in names or _dict(t).get("mcp_server_name") in servers)
        ]
    if "mcp_servers" in body:
        body["mcp_servers"] = [s for s in _list(body["mcp_servers"]) if _dict(s).get("name") not in servers]
        if not body["mcp_servers"]:
            body.pop("mcp_servers")
    if _dict(body.get("tool_choice")).get("name") in names:
        body.pop("tool_choice")
    _drop_empty_tools(body, "tool_choice")


def _strip_gemini(body: dict[str, Any], names: Collection[str]) -> None:
    kept = []
    for tool in _list(body.get("tools")):
        tool = {k: v for k, v in _dict(tool).items() if k not in names}
        key = _gemini_declarations_key(tool)
        if key is not None:
            tool[key] = [d for d in _list(tool[key]) if _dict(d).get("name") not in names]
            if not tool[key]:
                del tool[key]
        if tool:  # Gemini refuses an empty Tool object
            kept.append(tool)
    if "tools" in body:
        body["tools"] = kept
    for config_key, calling_key, allowed_key in (
        ("toolConfig", "functionCallingConfig", "allowedFunctionNames"),
        ("tool_config", "function_calling_config", "allowed_function_names"),
    ):
        calling = _dict(_dict(body.get(config_key)).get(calling_key))
        if allowed_key in calling:
            calling[allowed_key] = [n for n in _list(calling[allowed_key]) if n not in names]
            if not calling[allowed_key]:  # it only allowed stripped tools: let the model choose freely
                del body[config_key][calling_key]
    _drop_empty_tools(body, "toolConfig", "tool_config")
