"""The agent connected to a control plane: login once, the org's bundle arrives,
spend and traces are delivered exactly once, a revoked key stops working fast."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes.controlplane import FakeControlPlane
from tests.harness import LOCAL_KEY, AgentProcess, wait_until

AUTH = {"authorization": f"Bearer {LOCAL_KEY}"}
MESSAGE = {"model": "claude-sonnet-4-5", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def control_plane() -> Iterator[FakeControlPlane]:
    with FakeControlPlane() as cp:
        yield cp




def status(agent: AgentProcess) -> dict[str, Any]:
    return dict(httpx.get(agent.base_url + "/_governor/v1/status", headers=AUTH).json())


def login(data_dir: Any, url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GOVERNOR_DATA_DIR": str(data_dir), "GOVERNOR_CONFIG": str(data_dir / "none.toml")}
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "login", "--control-plane", url, "--no-browser"],
        env=env, capture_output=True, text=True, timeout=60,
    )


def test_login_then_governed_by_the_org(control_plane, start_agent, fake_provider, tmp_path):
    data_dir = tmp_path / "laptop"
    data_dir.mkdir()
    control_plane.configure(approve_after=1)
    done = login(data_dir, control_plane.url)
    assert done.returncode == 0, done.stderr
    assert "confirm the code" in done.stdout
    control_plane.update_bundle(model_aliases={"fast": "anthropic/claude-haiku-4-5"})

    # No URL configured: the agent finds the control plane `governor login` used.
    agent = start_agent(upstream=fake_provider.base_url, data_dir=data_dir)

    view = wait_until(lambda: (s := status(agent))["bundle"]["source"] == "control_plane" and s)
    assert view["control_plane"]["connected"] is True and view["governed"] is True

    fake_provider.clear()
    r = httpx.post(agent.base_url + "/v1/messages", headers=AUTH, json={**MESSAGE, "model": "fast"})
    assert r.status_code == 200
    assert fake_provider.last.body["model"] == "claude-haiku-4-5"
    request_id = r.headers["x-langwatch-request-id"]

    # Spend commands: admit then confirm, exactly once each, carrying the org's attribution.
    wait_until(lambda: ("confirmSpend", request_id) in control_plane.spend)
    admit = control_plane.spend[("admitSpend", request_id)]
    confirm = control_plane.spend[("confirmSpend", request_id)]
    assert admit["payload"]["virtual_key_id"] == "vk_fake_ada"
    assert confirm["payload"]["usage"]["input_tokens"] == fake_provider.last.usage.input_tokens
    # The trace: one gen_ai span with the project's token, no secret anywhere in it.
    span = wait_until(lambda: next((s for s in control_plane.spans if s["attributes"].get("langwatch.gateway_request_id") == request_id), None))
    assert span["attributes"]["gen_ai.request.model"] == "anthropic/claude-haiku-4-5"
    assert LOCAL_KEY not in repr(control_plane.spans) and "sk-upstream" not in repr(control_plane.spans)

    # Content capture, when the org asks: prompt and answer in the span, secrets redacted.
    control_plane.update_bundle(capture_content=True)
    wait_until(lambda: status(agent)["bundle"]["revision"] == control_plane.bundle["revision"])
    secret_prompt = f"my local key is {LOCAL_KEY}, say hi"
    r = httpx.post(agent.base_url + "/v1/messages", headers=AUTH, json={**MESSAGE, "messages": [{"role": "user", "content": secret_prompt}]})
    captured_id = r.headers["x-langwatch-request-id"]
    span = wait_until(lambda: next((s for s in control_plane.spans if s["attributes"].get("langwatch.gateway_request_id") == captured_id), None))
    assert "say hi" in span["attributes"]["gen_ai.input.messages"]
    assert "FAKE-OK" in span["attributes"]["gen_ai.output.messages"]
    assert LOCAL_KEY not in repr(span)

    # Revocation: the long-poll delivers it, and every call is refused within seconds.
    control_plane.revoke()
    revoked_at = time.monotonic()

    def refused() -> bool:
        r = httpx.post(agent.base_url + "/v1/messages", headers=AUTH, json=MESSAGE)
        return r.status_code == 403 and r.json()["error"]["code"] == "virtual_key_revoked"

    wait_until(refused, timeout=15, step=0.2)
    assert time.monotonic() - revoked_at < 15

    # Offline restart: the revocation persisted with the last bundle.
    agent.stop()
    control_plane.down()
    agent.start()
    assert refused()
