"""Fallback through the real agent: loopback upstreams that fail in each way,
before and after the first byte, and the circuit breaker opening and closing.

`primary` plays the provider APIs (direct mode), `backup` plays the org
gateway and Azure OpenAI; the bundle's chain names them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.providers import FakeProvider
from tests.gateway_client import call_record, token_fields
from tests.harness import LOCAL_KEY, AgentProcess, free_port

AUTH = {"authorization": f"Bearer {LOCAL_KEY}"}
VK = "vk-lw-personal-test"
AZURE_KEY = "azure-test-key"
MESSAGES = {"model": "claude-sonnet-4-5", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
CHAT = {"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]}


def start(tmp: Path, name: str, chain: list[str], env: dict[str, str], upstream: str | None = None, **fallback: Any) -> AgentProcess:
    data_dir = tmp / name
    data_dir.mkdir(parents=True)
    (data_dir / "secrets.json").write_text(json.dumps({"personal_vk": VK}))  # as `governor login` leaves it
    bundle = data_dir / "bundle.json"
    bundle.write_text(json.dumps({"revision": "1", "fallback": {"chain": chain, **fallback}}))
    return AgentProcess(data_dir, upstream=upstream, env={"GOVERNOR_BUNDLE": str(bundle), **env}).start()


@pytest.fixture(scope="module")
def primary() -> Iterator[FakeProvider]:
    with FakeProvider() as fake:
        yield fake


@pytest.fixture(scope="module")
def backup() -> Iterator[FakeProvider]:
    with FakeProvider(text="answered by the backup") as fake:
        yield fake


@pytest.fixture(autouse=True)
def clean(primary: FakeProvider, backup: FakeProvider) -> Iterator[None]:
    for fake in (primary, backup):
        fake.reset()
        fake.clear()
    yield
    for fake in (primary, backup):
        fake.reset()


@pytest.fixture(scope="module")
def chained(tmp_path_factory, primary, backup) -> Iterator[AgentProcess]:
    """Every provider direct to `primary`, the org gateway (`backup`) next in the chain."""
    agent = start(
        tmp_path_factory.mktemp("chained"), "agent", ["mp_gateway"], upstream=primary.base_url,
        env={"GOVERNOR_GATEWAY_URL": backup.base_url, "GOVERNOR_CIRCUIT_THRESHOLD": "1000"},
    )  # fmt: skip
    yield agent
    agent.kill()


@pytest.mark.parametrize("status", [500, 503, 529, 429, 404])
def test_failing_status_before_first_byte_falls_over(chained, primary, backup, status):
    primary.configure(error_status=status)
    r = httpx.post(chained.base_url + "/v1/messages", headers=AUTH, json=MESSAGES, timeout=10)
    assert r.status_code == 200
    assert r.headers["x-langwatch-fallback-count"] == "1"
    assert r.headers["x-governor-upstream"] == "gateway"
    assert r.content == bytes(backup.last.sent)
    assert primary.last.credential == "sk-upstream-anthropic"
    assert backup.last.credential == VK  # the org gateway sees the personal VK, never the local key
    assert LOCAL_KEY not in json.dumps(backup.last.headers) + json.dumps(primary.last.headers)
    call = call_record(chained, r.headers["x-langwatch-request-id"])
    assert call["status"] == 200 and token_fields(call["usage"]) == token_fields(backup.last.expected_usage())


@pytest.mark.parametrize("status", [400, 401, 403, 422])
def test_other_client_errors_are_final(chained, primary, backup, status):
    primary.configure(error_status=status)
    r = httpx.post(chained.base_url + "/v1/messages", headers=AUTH, json=MESSAGES, timeout=10)
    assert r.status_code == status
    assert r.content == bytes(primary.last.sent)
    assert "x-langwatch-fallback-count" not in r.headers
    assert backup.exchanges == []


def test_streamed_answer_after_fallback_is_byte_for_byte(chained, primary, backup):
    primary.configure(error_status=503)
    backup.configure(delay=0.02, text_deltas=6)
    body = {**MESSAGES, "stream": True}
    with httpx.stream("POST", chained.base_url + "/v1/messages", headers=AUTH, json=body, timeout=10) as r:
        chunks = list(r.iter_raw())
    assert r.headers["x-langwatch-fallback-count"] == "1"
    assert len(chunks) > 1  # streamed, not buffered
    assert b"".join(chunks) == bytes(backup.last.sent) and backup.last.complete


def test_no_failure_no_header_and_primary_serves(chained, primary, backup):
    r = httpx.post(chained.base_url + "/v1/chat/completions", headers=AUTH, json=CHAT, timeout=10)
    assert r.status_code == 200 and "x-langwatch-fallback-count" not in r.headers
    assert r.headers["x-governor-upstream"] == "openai"
    assert backup.exchanges == [] and primary.last.credential == "sk-upstream-openai"


def test_exhausted_chain_returns_the_last_error(chained, primary, backup):
    primary.configure(error_status=503)
    backup.configure(error_status=529, error_message="the backup is overloaded too")
    r = httpx.post(chained.base_url + "/v1/messages", headers=AUTH, json=MESSAGES, timeout=10)
    assert r.status_code == 529
    assert r.content == bytes(backup.last.sent)
    assert r.headers["x-langwatch-fallback-count"] == "1"
    assert "x-langwatch-handled-error" not in r.headers  # the provider's own error, passed through


def test_mid_stream_failure_is_final_with_terminal_event_and_settled_usage(chained, primary, backup):
    primary.configure(truncate_after=2)
    body = {**MESSAGES, "stream": True}
    with httpx.stream("POST", chained.base_url + "/v1/messages", headers=AUTH, json=body, timeout=10) as r:
        received = r.read()  # ends cleanly: no protocol error
        request_id = r.headers["x-langwatch-request-id"]
    ex = primary.last
    assert ex.truncated and backup.exchanges == []  # after the first byte: no fallback
    assert received.startswith(bytes(ex.sent))
    tail = received[len(ex.sent):]
    assert tail.startswith(b"event: error\ndata: ")
    assert json.loads(tail.split(b"data: ", 1)[1])["error"]["type"] == "api_error"
    call = call_record(chained, request_id)
    assert call["usage"]["input_tokens"] == ex.usage.input_tokens  # message_start arrived: billed


def test_openai_mid_stream_failure_gets_an_error_chunk_and_done(chained, primary):
    primary.configure(truncate_after=2)
    body = {**CHAT, "stream": True}
    with httpx.stream("POST", chained.base_url + "/v1/chat/completions", headers=AUTH, json=body, timeout=10) as r:
        received = r.read()
    assert received.endswith(b"data: [DONE]\n\n")
    assert b'"code":"provider_error"' in received


@pytest.fixture(scope="module")
def edge(tmp_path_factory, primary) -> Iterator[AgentProcess]:
    """Anthropic at a closed port, the org gateway too; Gemini to `primary` (which may hang); 1 s timeout."""
    closed = f"http://127.0.0.1:{free_port()}"
    agent = start(
        tmp_path_factory.mktemp("edge"), "agent", ["gateway"],
        env={
            "GOVERNOR_ANTHROPIC_BASE_URL": closed, "GOVERNOR_ANTHROPIC_API_KEY": "sk-a",
            "GOVERNOR_GEMINI_BASE_URL": primary.base_url, "GOVERNOR_GEMINI_API_KEY": "sk-g",
            "GOVERNOR_GATEWAY_URL": closed, "GOVERNOR_UPSTREAM_TIMEOUT_S": "1",
            "GOVERNOR_CIRCUIT_THRESHOLD": "1000",
        },
    )  # fmt: skip
    yield agent
    agent.kill()


def test_network_errors_exhaust_the_chain_with_an_envelope(edge):
    r = httpx.post(edge.base_url + "/v1/messages", headers=AUTH, json=MESSAGES, timeout=10)
    assert r.status_code == 502
    body = r.json()
    assert body["type"] == "error" and body["error"]["code"] == "provider_error"  # Anthropic's shape
    assert r.headers["x-langwatch-handled-error"] == "provider_error"
    assert r.headers["x-langwatch-fallback-count"] == "1"


def test_timeout_before_first_byte_falls_over(edge, primary):
    primary.configure(hang=True)
    gemini = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    started = time.monotonic()
    r = httpx.post(
        edge.base_url + "/v1beta/models/gemini-2.5-flash:generateContent", headers={"x-goog-api-key": LOCAL_KEY},
        json=gemini, timeout=10,
    )  # fmt: skip
    primary.configure(hang=False)
    # The gateway is down as well: the last error is the gateway's network failure.
    assert r.status_code == 502 and r.headers["x-langwatch-fallback-count"] == "1"
    assert r.json()["error"]["status"] == "UNAVAILABLE"  # Google's shape
    assert 0.9 < time.monotonic() - started < 5
    assert primary.last.credential == "sk-g"


def test_azure_openai_fallback_uses_its_url_and_api_key(tmp_path, primary, backup):
    agent = start(
        tmp_path, "azure", ["azure"], upstream=primary.base_url,
        env={
            "GOVERNOR_AZURE_OPENAI_BASE_URL": backup.base_url, "GOVERNOR_AZURE_OPENAI_API_KEY": AZURE_KEY,
            "GOVERNOR_AZURE_OPENAI_API_VERSION": "2025-04-01-preview",
        },
    )  # fmt: skip
    try:
        primary.configure(error_status=500)
        r = httpx.post(agent.base_url + "/v1/chat/completions", headers=AUTH, json=CHAT, timeout=10)
        assert r.status_code == 200 and r.headers["x-governor-upstream"] == "azure_openai"
        ex = backup.last
        assert ex.path == "/v1/chat/completions?api-version=2025-04-01-preview"
        assert ex.headers["api-key"] == AZURE_KEY and "authorization" not in ex.headers
        # Anthropic calls have no Azure upstream: the chain does not apply, mitmproxy dials directly.
        primary.reset()
        r = httpx.post(agent.base_url + "/v1/messages", headers=AUTH, json=MESSAGES, timeout=10)
        assert r.status_code == 200 and "x-governor-upstream" not in r.headers
    finally:
        agent.kill()


def status(agent: AgentProcess) -> dict[str, Any]:
    return dict(httpx.get(agent.base_url + "/_governor/v1/status", headers=AUTH).json()["routing"])


def test_circuit_breaker_opens_skips_and_closes(tmp_path, primary, backup):
    agent = start(
        tmp_path, "breaker", ["gateway"], upstream=primary.base_url,
        env={"GOVERNOR_GATEWAY_URL": backup.base_url, "GOVERNOR_CIRCUIT_THRESHOLD": "2", "GOVERNOR_CIRCUIT_COOLDOWN_S": "1.5"},
    )  # fmt: skip
    try:
        primary.configure(error_status=503)
        for _ in range(2):
            r = httpx.post(agent.base_url + "/v1/messages", headers=AUTH, json=MESSAGES, timeout=10)
            assert r.status_code == 200 and r.headers["x-langwatch-fallback-count"] == "1"
        assert len(primary.exchanges) == 2
        assert status(agent)["circuits"]["anthropic"]["state"] == "open"
        # Open: the primary is skipped outright, the backup answers.
        r = httpx.post(agent.base_url + "/v1/messages", headers=AUTH, json=MESSAGES, timeout=10)
        assert r.status_code == 200 and r.headers["x-langwatch-fallback-count"] == "1"
        assert len(primary.exchanges) == 2
        # After the cool-down a call goes through again (half-open); success closes the circuit.
        primary.reset()
        time.sleep(1.6)
        assert status(agent)["circuits"]["anthropic"]["state"] == "half_open"
        r = httpx.post(agent.base_url + "/v1/messages", headers=AUTH, json=MESSAGES, timeout=10)
        assert r.status_code == 200 and "x-langwatch-fallback-count" not in r.headers
        assert len(primary.exchanges) == 3
        assert status(agent)["circuits"] == {}
        assert status(agent)["modes"] == {"anthropic": "direct", "gemini": "direct", "openai": "direct"}
    finally:
        agent.kill()


def test_429_does_not_open_the_circuit(tmp_path, primary, backup):
    agent = start(
        tmp_path, "ratelimited", ["gateway"], upstream=primary.base_url,
        env={"GOVERNOR_GATEWAY_URL": backup.base_url, "GOVERNOR_CIRCUIT_THRESHOLD": "1"},
    )  # fmt: skip
    try:
        primary.configure(error_status=429)
        for _ in range(2):
            assert httpx.post(agent.base_url + "/v1/messages", headers=AUTH, json=MESSAGES, timeout=10).status_code == 200
        assert len(primary.exchanges) == 2 and status(agent)["circuits"] == {}
    finally:
        agent.kill()


# -- upstream modes -------------------------------------------------------------------------


def test_gateway_and_passthrough_modes(tmp_path, primary, backup):
    agent = start(
        tmp_path, "modes", [], upstream=primary.base_url,
        env={
            "GOVERNOR_UPSTREAM_MODE": "gateway", "GOVERNOR_GATEWAY_URL": backup.base_url,
            "GOVERNOR_UPSTREAM_MODES": json.dumps({"anthropic": "passthrough"}),
        },
    )  # fmt: skip
    try:
        # gateway: the org gateway with the personal VK, on the dialect's own path
        r = httpx.post(agent.base_url + "/v1/chat/completions", headers=AUTH, json=CHAT, timeout=10)
        assert r.status_code == 200 and backup.last.path == "/v1/chat/completions"
        assert backup.last.credential == VK and primary.exchanges == []
        # passthrough: the client's own key, untouched, no local key needed; still metered
        r = httpx.post(agent.base_url + "/v1/messages", headers={"x-api-key": "sk-ant-own"}, json=MESSAGES, timeout=10)
        assert r.status_code == 200 and primary.last.credential == "sk-ant-own"
        assert call_record(agent, r.headers["x-langwatch-request-id"])["usage"]["output_tokens"] > 0
        # …and the local key is never forwarded in its place
        r = httpx.post(agent.base_url + "/v1/messages", headers=AUTH, json=MESSAGES, timeout=10)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert len(primary.exchanges) == 1
        assert status(agent)["modes"] == {"anthropic": "passthrough", "gemini": "gateway", "openai": "gateway"}
    finally:
        agent.kill()


def test_gateway_mode_without_a_login_says_so(tmp_path, primary):
    data_dir = tmp_path / "nologin"
    agent = AgentProcess(data_dir, upstream=primary.base_url, env={"GOVERNOR_UPSTREAM_MODE": "gateway", "GOVERNOR_GATEWAY_URL": primary.base_url}).start()
    try:
        r = httpx.post(agent.base_url + "/v1/chat/completions", headers=AUTH, json=CHAT, timeout=10)
        assert r.status_code == 400 and r.json()["error"]["code"] == "no_provider_configured"
        assert "governor login" in r.json()["error"]["message"] and primary.exchanges == []
    finally:
        agent.kill()
