"""The org's rules on every call, end to end: the real agent with a bundle file,
the official SDKs as clients, the fake provider as the far side."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.fakes.providers import FakeUsage
from tests.gateway_client import anthropic_client, openai_client
from tests.harness import LOCAL_KEY, AgentProcess
from tests.recording import Recorder

AUTH = {"authorization": f"Bearer {LOCAL_KEY}"}
BASH = {"name": "Bash", "description": "run", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}}
READ = {"name": "Read", "description": "read", "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}}


def bundle(**fields: Any) -> dict[str, Any]:
    return {"revision": "1", "vk_id": "vk_test", "principal_id": "user_test", "project_id": "proj_test", **fields}


def budget(limit_usd: float, on_breach: str = "block", window: str = "month", spent_usd: float = 0.0) -> dict[str, Any]:
    return {
        "id": f"bud_{window}_{on_breach}",
        "scope": "principal",
        "scope_id": "user_test",
        "principal_id": "user_test",
        "window": window,
        "limit_micro_usd": int(limit_usd * 1_000_000),
        "spent_micro_usd": int(spent_usd * 1_000_000),
        "resets_at": int(time.time()) + 86400 * 20,
        "on_breach": on_breach,
    }


@pytest.fixture
def governed_by(start_agent, fake_provider, tmp_path) -> Callable[..., AgentProcess]:
    """Start an agent on a bundle file (the standalone default: no control plane)."""

    def start(content: dict[str, Any], name: str = "agent") -> AgentProcess:
        path = tmp_path / f"{name}-bundle.json"
        path.write_text(json.dumps(content))
        return start_agent(upstream=fake_provider.base_url, env={"GOVERNOR_BUNDLE": str(path)}, name=name)

    return start


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.close()


def status(agent: AgentProcess) -> dict[str, Any]:
    return dict(httpx.get(agent.base_url + "/_governor/v1/status", headers=AUTH).json())


# --- policy ------------------------------------------------------------------


def test_denied_tool_rejects_in_the_clients_dialect(governed_by, fake, recorder):
    agent = governed_by(bundle(policy_rules={"tools": {"deny": ["^Bash$"], "action": "reject"}}))
    client = anthropic_client(agent, recorder)
    with pytest.raises(anthropic.PermissionDeniedError) as raised:
        client.messages.create(model="claude-sonnet-4-5", max_tokens=10, tools=[READ, BASH], messages=[{"role": "user", "content": "hi"}])
    assert raised.value.body["error"]["code"] == "policy_violation"
    assert 'tool "Bash" is blocked by policy' in raised.value.message
    assert fake.generate_exchanges() == []
    assert status(agent)["last_refusal"]["code"] == "policy_violation"


def test_denied_tool_is_stripped_and_the_call_proceeds(governed_by, fake, recorder):
    agent = governed_by(bundle(policy_rules={"tools": {"deny": ["^Bash$"], "action": "strip"}}))
    client = anthropic_client(agent, recorder)
    raw = client.messages.with_raw_response.create(
        model="claude-sonnet-4-5", max_tokens=10, tools=[READ, BASH], messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-langwatch-policy-stripped"] == "Bash"
    assert [t["name"] for t in fake.last.body["tools"]] == ["Read"]
    assert raw.parse().content[0].text


def test_denied_mcp_server_and_url(governed_by, fake, recorder):
    agent = governed_by(bundle(policy_rules={"mcp": {"deny": ["^github$"]}, "urls": {"deny": ["pastebin\\.example"]}}))
    client = openai_client(agent, recorder)
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(
            model="gpt-5.5",
            messages=[{"role": "user", "content": "hi"}],
            tools=[{"type": "function", "function": {"name": "mcp__github__create_issue", "parameters": {}}}],
        )
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="gpt-5.5", messages=[{"role": "user", "content": "see https://pastebin.example/x"}])
    assert fake.generate_exchanges() == []


def test_model_alias_resolved_and_models_allowed(governed_by, fake, recorder):
    agent = governed_by(bundle(model_aliases={"fast": "anthropic/claude-haiku-4-5"}, models_allowed=["claude-*"]))
    client = anthropic_client(agent, recorder)
    client.messages.create(model="fast", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert fake.last.body["model"] == "claude-haiku-4-5"
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(model="gpt-4o", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert raised.value.body["error"]["code"] == "model_not_allowed"


CUT_CASES = {
    "anthropic": (
        "/v1/messages",
        {"model": "claude-sonnet-4-5", "max_tokens": 50, "stream": True},
        b'event: error\ndata: {"type":"error","error":{"type":"permission_error"',
    ),
    "openai_chat": ("/v1/chat/completions", {"model": "gpt-5.5", "stream": True}, b'data: {"error":'),
    "openai_responses": ("/v1/responses", {"model": "gpt-5.5", "stream": True}, b"event: error\n"),
    "gemini": ("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", {}, b'data: {"error":{"code":403'),
}


@pytest.mark.parametrize("dialect", list(CUT_CASES))
def test_model_calling_a_denied_tool_is_cut_from_the_stream(governed_by, fake, dialect):
    agent = governed_by(bundle(policy_rules={"tools": {"deny": ["^get_weather$"], "action": "strip"}}))
    path, body, terminal = CUT_CASES[dialect]
    prompt = 'FAKE_TOOL get_weather {"city": "Paris"}'
    if dialect == "gemini":
        body = {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}
    elif dialect == "openai_responses":
        body = {**body, "input": prompt}
    else:
        body = {**body, "messages": [{"role": "user", "content": prompt}]}
    # The client never offered the tool: the model calls it anyway.
    with httpx.stream("POST", agent.base_url + path, headers=AUTH, json=body) as response:
        received = response.read()
    upstream = bytes(fake.last.sent)
    cut_at = received.index(terminal)
    assert upstream.startswith(received[:cut_at])  # everything before the cut is the provider's, byte for byte
    assert b"get_weather" not in received[:cut_at]
    assert b"Paris" not in received
    assert status(agent)["last_refusal"]["message"] == 'tool "get_weather" is blocked by policy'


def test_non_streamed_answer_calling_a_denied_tool_is_refused_whole(governed_by, fake, recorder):
    agent = governed_by(bundle(policy_rules={"tools": {"deny": ["^get_weather$"]}}))
    client = openai_client(agent, recorder)
    with pytest.raises(openai.PermissionDeniedError) as raised:
        client.chat.completions.create(model="gpt-5.5", messages=[{"role": "user", "content": 'FAKE_TOOL get_weather {"city": "Oslo"}'}])
    assert "get_weather" in raised.value.message
    assert b"Oslo" not in recorder.last


# --- budgets -----------------------------------------------------------------


def test_exhausted_block_budget_is_a_402_that_says_which_and_when(governed_by, fake, recorder):
    agent = governed_by(bundle(budgets=[budget(1.0, spent_usd=1.0)]))
    client = anthropic_client(agent, recorder)
    with pytest.raises(anthropic.APIStatusError) as raised:
        client.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    error = raised.value.body["error"]
    assert raised.value.status_code == 402 and error["code"] == "budget_exceeded"
    assert error["meta"] == {"budget_id": "bud_month_block", "budget_scope": "principal", "budget_window": "month"}
    assert "resets" in error["message"]
    assert fake.generate_exchanges() == []


def test_warn_budget_never_blocks_but_warns(governed_by, fake, recorder):
    agent = governed_by(bundle(budgets=[budget(1.0, on_breach="warn", spent_usd=0.95)]))
    client = anthropic_client(agent, recorder)
    raw = client.messages.with_raw_response.create(model="claude-sonnet-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-langwatch-budget-warning"].startswith("principal:")
    assert int(raw.headers["x-langwatch-budget-warning"].split(":")[1]) >= 80


def test_rate_limit_is_a_429_with_retry_after(governed_by, fake):
    agent = governed_by(bundle(rate_limits={"rpm": 2}))
    body = {"model": "gpt-5.5", "messages": [{"role": "user", "content": "hi"}]}
    codes = [httpx.post(agent.base_url + "/v1/chat/completions", headers=AUTH, json=body).status_code for _ in range(3)]
    assert codes[:2] == [200, 200]
    r = httpx.post(agent.base_url + "/v1/chat/completions", headers=AUTH, json=body)
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
    assert int(r.headers["retry-after"]) > 0


def _stream_call(agent: AgentProcess) -> int:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 200, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    try:
        with httpx.stream("POST", agent.base_url + "/v1/messages", headers=AUTH, json=body, timeout=30) as r:
            r.read()
            return r.status_code
    except httpx.HTTPError:
        return -1


def _spent(agent: AgentProcess) -> dict[str, Any]:
    return status(agent)["budgets"][0]


def test_concurrent_streams_never_overshoot_by_more_than_one_request(governed_by, fake):
    from agent.core.admission import plan_admission
    from agent.core.bundle import parse_bundle
    from agent.core.dialects import Dialect, Endpoint, Operation

    body = {"model": "claude-sonnet-4-5", "max_tokens": 200, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    probe = plan_admission(parse_bundle(bundle()), Endpoint(Dialect.ANTHROPIC, Operation.GENERATE), body, body["model"],
                           len(json.dumps(body)), time.time())
    worst_usd = probe.worst_case_nano / 1e9
    limit_usd = worst_usd * 10.5  # room for 10 worst cases
    agent = governed_by(bundle(budgets=[budget(limit_usd)]))
    # Real usage within the reservation's estimate (a prompt this small has few tokens).
    fake.configure(delay=0.02, text_deltas=10, usage=FakeUsage(input_tokens=12, cache_read_tokens=0, cache_write_5m_tokens=0,
                                                               cache_write_1h_tokens=0, output_tokens=150, reasoning_tokens=0))
    with ThreadPoolExecutor(64) as pool:
        codes = list(pool.map(lambda _: _stream_call(agent), range(64)))
    admitted = codes.count(200)
    assert admitted >= 10 and codes.count(402) == 64 - admitted
    view = _spent(agent)
    assert view["reserved_usd"] == 0
    assert view["spent_usd"] <= limit_usd + worst_usd
    # Each admitted call was billed its real cost, no more, no less.
    per_call = view["spent_usd"] / admitted
    assert per_call == pytest.approx(view["spent_usd"] / len(fake.generate_exchanges()))


def test_kill_9_mid_run_leaves_no_reservation_and_keeps_spend(governed_by, fake, tmp_path):
    agent = governed_by(bundle(budgets=[budget(5.0)]), name="crashy")
    fake.configure(delay=0.05, text_deltas=40)
    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(_stream_call, agent) for _ in range(16)]
        time.sleep(0.6)
        before = _spent(agent)
        assert before["reserved_usd"] > 0
        agent.signal(signal.SIGKILL)
        [f.result() for f in futures]
    agent.proc.wait(5)
    fake.reset()
    # Same data dir, same bundle: the restart reclaims what the dead process reserved.
    agent.start()
    after = _spent(agent)
    assert after["reserved_usd"] == 0
    assert after["spent_usd"] >= before["spent_usd"]
    assert _stream_call(agent) == 200


def test_offline_ledger_stops_at_the_limit_and_survives_restart(governed_by, fake):
    agent = governed_by(bundle(budgets=[budget(0.05)]), name="offline")
    body = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    codes = [httpx.post(agent.base_url + "/v1/messages", headers=AUTH, json=body).status_code for _ in range(100)]
    admitted = codes.count(200)
    assert 0 < admitted < 100 and set(codes) == {200, 402}
    assert codes.index(402) == admitted  # once refused, refused: the ledger does not forget
    spent = _spent(agent)["spent_usd"]
    # The fake bills more prompt tokens than this tiny body can hold, so the last
    # admitted call may overshoot; never by more than that one call.
    assert spent <= 0.05 + spent / admitted
    agent.stop()
    agent.start()
    assert _spent(agent)["spent_usd"] == pytest.approx(spent)
    assert httpx.post(agent.base_url + "/v1/messages", headers=AUTH, json=body).status_code == 402


def test_spend_view_reports_today_per_model_and_client(governed_by, fake, recorder):
    agent = governed_by(bundle(budgets=[budget(100.0)]))
    anthropic_client(agent, recorder).messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    openai_client(agent, recorder).chat.completions.create(model="gpt-5.5", messages=[{"role": "user", "content": "hi"}])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and status(agent)["today"]["requests"] < 2:
        time.sleep(0.05)
    view = status(agent)
    assert view["today"]["requests"] == 2 and view["today"]["cost_usd"] > 0
    assert set(view["today"]["by_model"]) == {"claude-sonnet-4-5", "gpt-5.5"}
    assert set(view["today"]["by_client"]) == {"anthropic-sdk", "openai-sdk"}
    b = view["budgets"][0]
    assert b["limit_usd"] == 100.0 and b["spent_usd"] > 0 and b["remaining_usd"] == pytest.approx(100.0 - b["spent_usd"])
    assert view["governed"] is True and view["bundle"]["source"].startswith("file:")


def test_invalid_bundle_file_keeps_the_last_good_one(governed_by, fake, tmp_path):
    agent = governed_by(bundle(policy_rules={"tools": {"deny": ["^Bash$"]}}), name="reload")
    path = tmp_path / "reload-bundle.json"
    path.write_text('{"policy_rules": {"tools": {"deny": ["x("]}}}')
    time.sleep(1.5)
    assert "invalid RE2 regex" in agent.log() and "policy_rules.tools.deny[0]" in agent.log()
    body = {"model": "claude-sonnet-4-5", "max_tokens": 5, "tools": [BASH], "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(agent.base_url + "/v1/messages", headers=AUTH, json=body).status_code == 403
    path.write_text(json.dumps(bundle()))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and status(agent)["bundle"]["revision"] != "1":
        time.sleep(0.1)
    time.sleep(1.2)
    assert httpx.post(agent.base_url + "/v1/messages", headers=AUTH, json=body).status_code == 200
