"""The reference gateway's observable contract: probes, headers, the 401, drain."""

from __future__ import annotations

import re
import signal
import time

import httpx

REQUEST_ID = re.compile(r"^req_[0-9a-f]{30}$")
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-01$")


def assert_stamped(response: httpx.Response) -> None:
    h = response.headers
    assert h["x-langwatch-gateway-version"]
    assert REQUEST_ID.match(h["x-langwatch-request-id"]), h["x-langwatch-request-id"]
    m = TRACEPARENT.match(h["traceparent"])
    assert m, h["traceparent"]
    assert h["x-langwatch-trace-id"] == m[1]
    assert h["x-langwatch-span-id"] == m[2]


def test_health_probes_and_headers(shared_agent):
    agent = shared_agent
    r = httpx.get(agent.base_url + "/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["version"] == r.headers["x-langwatch-gateway-version"]
    assert isinstance(body["uptime_s"], float) and body["uptime_s"] > 0
    assert_stamped(r)
    for path in ("/startupz", "/readyz"):
        r = httpx.get(agent.base_url + path)
        assert r.status_code == 200, path
        assert_stamped(r)
    # Claude Code probes HEAD / without a key before every run.
    r = httpx.head(agent.base_url + "/")
    assert r.status_code == 200
    assert_stamped(r)


def test_missing_key_is_the_seed_401(shared_agent):
    agent = shared_agent
    for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions")):
        r = httpx.request(method, agent.base_url + path, json={"model": "x"} if method == "POST" else None)
        assert r.status_code == 401
        assert r.content == (
            b'{"error":{"type":"invalid_api_key","code":"missing_api_key",'
            b'"message":"missing API key; supply Authorization: Bearer vk-lw-... or x-api-key"}}'
        )
        assert r.headers["content-type"] == "application/json"
        assert r.headers["x-langwatch-handled-error"] == "missing_api_key"
        assert_stamped(r)


def test_missing_key_on_anthropic_path_carries_type_error(shared_agent):
    agent = shared_agent
    r = httpx.post(agent.base_url + "/v1/messages", json={"model": "x"})
    assert r.status_code == 401
    assert r.json()["type"] == "error"
    assert r.json()["error"]["code"] == "missing_api_key"


def test_wrong_key_is_401_in_every_header(shared_agent):
    agent = shared_agent
    for headers, params in (
        ({"authorization": "Bearer nope"}, {}),
        ({"x-api-key": "nope"}, {}),
        ({"x-goog-api-key": "nope"}, {}),
        ({}, {"key": "nope"}),
    ):
        r = httpx.get(agent.base_url + "/v1/models", headers=headers, params=params)
        assert r.status_code == 401, headers
        assert r.headers["x-langwatch-handled-error"] == "invalid_api_key"
        error = r.json()["error"]
        if "x-goog-api-key" in headers or params:  # Google's clients get Google's shape
            assert error["status"] == "UNAUTHENTICATED" and error["details"][0]["reason"] == "invalid_api_key"
        else:
            assert error["code"] == "invalid_api_key"


def test_inbound_traceparent_is_continued(shared_agent):
    agent = shared_agent
    inbound_trace, inbound_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    r = httpx.get(agent.base_url + "/v1/models", headers={"traceparent": f"00-{inbound_trace}-{inbound_span}-01"})
    assert r.headers["x-langwatch-trace-id"] == inbound_trace
    assert r.headers["x-langwatch-span-id"] != inbound_span
    assert r.headers["traceparent"].startswith(f"00-{inbound_trace}-")


def test_unknown_path_is_a_404_envelope(shared_agent, local_key):
    agent = shared_agent
    r = httpx.post(agent.base_url + "/v1/embeddingz", headers={"authorization": f"Bearer {local_key}"}, json={})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
    assert r.headers["x-langwatch-handled-error"] == "not_found"


def test_local_api_needs_the_key(shared_agent, local_key):
    agent = shared_agent
    assert httpx.get(agent.base_url + "/_governor/v1/status").status_code == 401
    r = httpx.get(agent.base_url + "/_governor/v1/status", headers={"authorization": f"Bearer {local_key}"})
    assert r.status_code == 200
    assert r.json()["state"] == "running"


def test_sigterm_drains_then_stops(start_agent):
    agent = start_agent(env={"GOVERNOR_DRAIN_PRE_WAIT_S": "1.0"})
    agent.signal(signal.SIGTERM)
    deadline = time.monotonic() + 0.8
    saw_draining = False
    while time.monotonic() < deadline and not saw_draining:
        r = httpx.get(agent.base_url + "/readyz")
        saw_draining = r.status_code == 503 and r.json() == {"status": "draining"}
        # Liveness stays up while draining.
        assert httpx.get(agent.base_url + "/healthz").status_code == 200
    assert saw_draining
    assert agent.proc is not None and agent.proc.wait(10) == 0
    log = agent.log()
    positions = [log.index(f'msg="{event}"') for event in ("gateway_draining", "gateway_shutting_down", "gateway_stopped")]
    assert positions == sorted(positions)
