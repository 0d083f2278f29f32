import copy

import pytest

from agent.core.bundle import parse_bundle
from agent.core.dialects import Dialect
from agent.core.policy import evaluate_request, tool_denier
from agent.core.request_tools import find_urls, offers, strip_tools

A, C, R, G = Dialect.ANTHROPIC, Dialect.OPENAI_CHAT, Dialect.OPENAI_RESPONSES, Dialect.GEMINI
MCP_URL = "https://mcp.evil.example/sse"


def chat_tool(name):
    return {"type": "function", "function": {"name": name, "parameters": {}}}


BODIES = {
    A: {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"name": "Bash", "input_schema": {}}, {"name": "Read", "input_schema": {}},
                  {"name": "mcp__github__create_issue", "input_schema": {}},
                  {"type": "web_search_20250305", "name": "web_search"}],
        "tool_choice": {"type": "tool", "name": "Bash"},
        "mcp_servers": [{"type": "url", "url": MCP_URL, "name": "evil"},
                        {"type": "url", "url": "https://mcp.ok.example", "name": "ok"}],
    },
    C: {
        "model": "gpt-5",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [chat_tool("Bash"), chat_tool("Read"), chat_tool("mcp__github__create_issue")],
        "tool_choice": {"type": "function", "function": {"name": "Bash"}},
        "parallel_tool_calls": True,
    },
    R: {
        "model": "gpt-5",
        "input": [{"role": "user", "content": "hi"}],
        "tools": [
            {"type": "function", "name": "Bash", "parameters": {}},
            {"type": "function", "name": "Read", "parameters": {}},
            {"type": "function", "name": "mcp__github__create_issue", "parameters": {}},
            {"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}},
            {"type": "web_search", "external_web_access": False},
            {"type": "tool_search", "execution": "client"},
            {"type": "namespace", "name": "multi_agent_v1",
             "tools": [{"type": "function", "name": "spawn_agent"}, {"type": "function", "name": "wait"}]},
            {"type": "mcp", "server_label": "evil", "server_url": MCP_URL},
        ],
        "tool_choice": {"type": "function", "name": "Bash"},
        "parallel_tool_calls": True,
    },
    G: {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "tools": [{"functionDeclarations": [{"name": "Bash"}, {"name": "Read"},
                                            {"name": "mcp__github__create_issue"}]},
                  {"googleSearch": {}}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["Bash"]}},
    },
}  # fmt: skip
ALL = [A, C, R, G]


def judge(dialect, rules, body=None, model=None, **bundle):
    body = copy.deepcopy(body or BODIES[dialect])
    before = copy.deepcopy(body)
    decision = evaluate_request(parse_bundle({"policy_rules": rules, **bundle}), dialect, body,
                                model if model is not None else ("gemini-2.5-flash" if dialect is G else None))
    assert body == before, "evaluate_request must not mutate the request"
    return decision


def tool_names(dialect, body):
    return [o.name for o in offers(dialect, body) if o.kind == "tool"]


def test_offers_in_every_dialect():
    assert tool_names(A, BODIES[A]) == ["Bash", "Read", "mcp__github__create_issue", "web_search"]
    assert [o.name for o in offers(A, BODIES[A]) if o.kind == "mcp_server"] == ["evil", "ok"]
    assert tool_names(C, BODIES[C]) == ["Bash", "Read", "mcp__github__create_issue"]
    assert tool_names(R, BODIES[R]) == ["Bash", "Read", "mcp__github__create_issue", "apply_patch", "web_search",
                                        "tool_search", "multi_agent_v1.spawn_agent", "multi_agent_v1.wait"]
    (server,) = [o for o in offers(R, BODIES[R]) if o.kind == "mcp_server"]
    assert server.mcp_spellings == ("evil", MCP_URL)
    assert tool_names(G, BODIES[G]) == ["Bash", "Read", "mcp__github__create_issue", "googleSearch"]
    snake = {"tools": [{"function_declarations": [{"name": "Bash"}]}]}
    assert tool_names(G, snake) == ["Bash"]
    legacy = {"functions": [{"name": "old_fn"}]}
    assert tool_names(C, legacy) == ["old_fn"]


@pytest.mark.parametrize("dialect", ALL)
def test_denied_tool_rejects(dialect):
    decision = judge(dialect, {"tools": {"deny": ["^Bash$"]}})
    assert (decision.action, decision.status, decision.code) == ("reject", 403, "policy_violation")
    assert decision.message == 'tool "Bash" is blocked by policy'
    assert (decision.dimension, decision.subject) == ("tools", "Bash")


@pytest.mark.parametrize("dialect", ALL)
def test_denied_tool_is_stripped(dialect):
    decision = judge(dialect, {"tools": {"deny": ["^Bash$"], "action": "strip"}})
    assert decision.action == "strip" and decision.allowed
    assert decision.stripped == ["Bash"]
    body = decision.body
    assert "Bash" not in tool_names(dialect, body) and "Read" in tool_names(dialect, body)
    assert "tool_choice" not in body  # it forced the stripped tool
    if dialect is G:
        assert "functionCallingConfig" not in body["toolConfig"]
    if dialect in (C, R):
        assert body["parallel_tool_calls"] is True  # tools remain, so it stays


@pytest.mark.parametrize("dialect", ALL)
def test_allow_list_admits_only_matches(dialect):
    decision = judge(dialect, {"tools": {"allow": ["^Read$"]}})
    assert decision.action == "reject" and decision.message == 'tool "Bash" is not in allowlist'
    stripped = judge(dialect, {"tools": {"allow": ["^Read$"], "action": "strip"}})
    assert tool_names(dialect, stripped.body) == ["Read"]
    assert "Read" not in stripped.stripped_tools


@pytest.mark.parametrize("dialect", [C, R])
def test_stripping_every_tool_drops_tool_fields(dialect):
    decision = judge(dialect, {"tools": {"allow": [], "action": "strip"}, "mcp": {"deny": ["."], "action": "strip"}})
    for key in ("tools", "tool_choice", "parallel_tool_calls"):
        assert key not in decision.body


def test_gemini_strip_drops_empty_tool_objects_and_builtins():
    decision = judge(G, {"tools": {"deny": ["^(Bash|Read|mcp__.*|googleSearch)$"], "action": "strip"}})
    assert "tools" not in decision.body and "toolConfig" not in decision.body
    partial = judge(G, {"tools": {"deny": ["googleSearch"], "action": "strip"}})
    assert partial.body["tools"] == [BODIES[G]["tools"][0]]
    snake = {"tools": [{"function_declarations": [{"name": "Bash"}, {"name": "Read"}]}],
             "tool_config": {"function_calling_config": {"allowed_function_names": ["Bash", "Read"]}}}
    out = judge(G, {"tools": {"deny": ["Bash"], "action": "strip"}}, snake).body
    assert out["tools"] == [{"function_declarations": [{"name": "Read"}]}]
    assert out["tool_config"]["function_calling_config"]["allowed_function_names"] == ["Read"]


@pytest.mark.parametrize("dialect", ALL)
def test_mcp_rules_match_the_server_of_claude_code_tools(dialect):
    decision = judge(dialect, {"mcp": {"deny": ["^github$"]}})
    assert decision.action == "reject" and decision.dimension == "mcp"
    assert decision.message == 'MCP server "github" is blocked by policy'
    stripped = judge(dialect, {"mcp": {"deny": ["^github$"], "action": "strip"}})
    assert stripped.stripped_tools == ("mcp__github__create_issue",)


@pytest.mark.parametrize("dialect", ALL)
def test_tools_rules_see_the_full_mcp_tool_name(dialect):
    decision = judge(dialect, {"tools": {"deny": ["^mcp__github__create_issue$"]}})
    assert decision.dimension == "tools" and decision.subject == "mcp__github__create_issue"


def test_plain_tools_escape_mcp_allow_lists():
    # An mcp allow list governs MCP servers; it must not refuse `Read`.
    decision = judge(C, {"mcp": {"allow": ["^github$"]}})
    assert decision.action == "allow"


def test_reject_outranks_strip_for_one_tool():
    rules = {"tools": {"deny": ["create_issue"], "action": "strip"}, "mcp": {"deny": ["github"]}}
    assert judge(A, rules).action == "reject"


@pytest.mark.parametrize("dialect", [A, R])
def test_mcp_servers_reject_and_strip(dialect):
    decision = judge(dialect, {"mcp": {"deny": ["^evil$"]}})
    assert decision.action == "reject" and decision.message == 'MCP server "evil" is blocked by policy'
    by_url = judge(dialect, {"mcp": {"deny": [r"evil\.example"]}})
    assert by_url.subject == "evil"
    stripped = judge(dialect, {"mcp": {"deny": ["^evil$"], "action": "strip"}})
    assert stripped.stripped == ["mcp:evil"] and MCP_URL not in str(stripped.body)


def test_anthropic_mcp_toolset_follows_its_server():
    body = {"model": "m", "tools": [{"type": "mcp_toolset", "mcp_server_name": "evil"}, {"name": "Read"}],
            "mcp_servers": [{"type": "url", "url": MCP_URL, "name": "evil"}]}
    decision = judge(A, {"mcp": {"deny": ["evil"], "action": "strip"}}, body)
    assert decision.body["tools"] == [{"name": "Read"}] and "mcp_servers" not in decision.body


def test_namespace_members():
    bare = judge(R, {"tools": {"deny": ["^spawn_agent$"], "action": "strip"}})
    assert bare.stripped_tools == ("multi_agent_v1.spawn_agent",)
    (ns,) = [t for t in bare.body["tools"] if t["type"] == "namespace"]
    assert [m["name"] for m in ns["tools"]] == ["wait"]
    whole = judge(R, {"tools": {"deny": [r"^multi_agent_v1\."], "action": "strip"}})
    assert not [t for t in whole.body["tools"] if t["type"] == "namespace"]


def test_responses_builtins_by_type():
    decision = judge(R, {"tools": {"deny": ["^web_search$", "^apply_patch$"], "action": "strip"}})
    assert decision.stripped_tools == ("apply_patch", "web_search")
    types = [t["type"] for t in decision.body["tools"]]
    assert "web_search" not in types and "custom" not in types and "tool_search" in types


@pytest.mark.parametrize("dialect", ALL)
def test_urls_anywhere_in_the_body(dialect):
    body = copy.deepcopy(BODIES[dialect])
    body["extra"] = {"deep": [{"text": "see (https://paste.bin.example/abc?x=1)."}]}
    decision = judge(dialect, {"urls": {"deny": [r"bin\.example"]}}, body)
    assert decision.action == "reject" and decision.dimension == "urls"
    assert decision.message == 'url "https://paste.bin.example/abc?x=1" is blocked by policy'
    allowed = judge(dialect, {"urls": {"allow": [r"^https://(paste\.bin|mcp\.(ok|evil))\.example"]}}, body)
    assert allowed.action == "allow"
    assert judge(dialect, {"urls": {"allow": [r"^https://nothing\.example"]}}, body).code == "policy_violation"


def test_url_of_a_stripped_mcp_server_is_not_judged():
    rules = {"mcp": {"deny": ["^evil$"], "action": "strip"}, "urls": {"deny": [r"evil\.example"]}}
    assert judge(R, rules).action == "strip"


def test_find_urls():
    body = {"a": ["x http://A.example/p, and HTTPS://b.example/q?r=1).", "no url"], "b": {"c": "ftp://c"}}
    assert sorted(find_urls(body)) == ["HTTPS://b.example/q?r=1", "http://A.example/p"]


@pytest.mark.parametrize("dialect", [A, C, R])
def test_alias_resolves_model_in_body(dialect):
    aliases = {BODIES[dialect]["model"]: "anthropic/claude-haiku-4-5"}
    decision = judge(dialect, {}, model_aliases=aliases)
    assert decision.model == "claude-haiku-4-5" and decision.model_provider == "anthropic"
    assert decision.body["model"] == "claude-haiku-4-5" and decision.model_changed
    assert decision.requested_model == BODIES[dialect]["model"]
    assert not decision.model_in_path


def test_alias_resolves_gemini_path_model():
    decision = judge(G, {}, model="flash", model_aliases={"flash": "gemini/gemini-2.5-flash"})
    assert decision.model == "gemini-2.5-flash" and decision.model_in_path and decision.body is None


def test_alias_without_known_provider_stays_whole():
    decision = judge(C, {}, model_aliases={"gpt-5": "meta-llama/llama-4"})
    assert decision.model == "meta-llama/llama-4" and decision.model_provider is None


@pytest.mark.parametrize("dialect", ALL)
def test_models_allowed_globs(dialect):
    decision = judge(dialect, {}, models_allowed=["some-other-*"])
    assert (decision.status, decision.code) == (400, "model_not_allowed")
    model = judge(dialect, {}).model
    provider = {A: "anthropic", C: "openai", R: "openai", G: "gemini"}[dialect]
    assert judge(dialect, {}, models_allowed=[f"{provider}/*"]).action == "allow"
    assert judge(dialect, {}, models_allowed=[model[:4] + "*"]).action == "allow"


def test_models_allowed_judges_the_resolved_model():
    decision = judge(C, {}, model_aliases={"gpt-5": "anthropic/claude-haiku-4-5"}, models_allowed=["claude-*"])
    assert decision.action == "allow"
    assert judge(C, {}, model_aliases={"gpt-5": "claude-x"}, models_allowed=["gpt-*"]).code == "model_not_allowed"


@pytest.mark.parametrize("dialect", ALL)
def test_model_policy_rules_see_bare_and_provider_spellings(dialect):
    provider = {A: "anthropic", C: "openai", R: "openai", G: "gemini"}[dialect]
    decision = judge(dialect, {"models": {"deny": [f"^{provider}/"]}})
    assert (decision.status, decision.code, decision.dimension) == (403, "policy_violation", "models")
    assert decision.message.endswith("is blocked by policy")
    assert judge(dialect, {"models": {"allow": ["^nothing$"]}}).message.endswith("is not in allowlist")
    assert judge(dialect, {"models": {"allow": ["."]}}).action == "allow"


def test_tool_denier():
    bundle = parse_bundle({"policy_rules": {"tools": {"deny": ["^Bash$", "^spawn_agent$"], "action": "strip"},
                                            "mcp": {"allow": ["^github$"]}}})
    is_denied = tool_denier(bundle, R)
    assert is_denied("Bash") and not is_denied("Read")
    assert is_denied("multi_agent_v1.spawn_agent") and not is_denied("multi_agent_v1.wait")
    assert is_denied("mcp__slack__post") and not is_denied("mcp__github__create_issue")
    assert not tool_denier(bundle, G)("files.spawn_agent")  # dots are plain name characters in Gemini
    assert not tool_denier(parse_bundle({}), A)("Bash")


def test_strip_tools_is_in_place_and_public():
    body = copy.deepcopy(BODIES[A])
    assert strip_tools(A, body, ["Read"], ["ok"]) is body
    assert tool_names(A, body) == ["Bash", "mcp__github__create_issue", "web_search"]
    assert [s["name"] for s in body["mcp_servers"]] == ["evil"]
    assert body["tool_choice"] == {"type": "tool", "name": "Bash"}
