"""Helpers for end-to-end tests: the official SDKs pointed at a running agent."""

from __future__ import annotations

import time
from typing import Any

import anthropic
import httpx
import httpx2
import openai
from google import genai
from google.genai import types

from tests.harness import LOCAL_KEY, AgentProcess
from tests.recording import Recorder


def anthropic_client(agent: AgentProcess, transport: Recorder) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=agent.base_url, api_key=LOCAL_KEY, max_retries=0, http_client=transport.client(httpx2)
    )


def openai_client(agent: AgentProcess, transport: Recorder) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=agent.base_url + "/v1", api_key=LOCAL_KEY, max_retries=0, http_client=transport.client(httpx2)
    )


def genai_client(agent: AgentProcess, transport: Recorder, api_version: str = "v1") -> genai.Client:
    return genai.Client(
        api_key=LOCAL_KEY,
        http_options=types.HttpOptions(
            base_url=agent.base_url, api_version=api_version, httpx_client=transport.client(httpx)
        ),
    )


def recorded_calls(agent: AgentProcess) -> list[dict[str, Any]]:
    r = httpx.get(agent.base_url + "/_governor/v1/calls", headers={"authorization": f"Bearer {LOCAL_KEY}"})
    r.raise_for_status()
    return list(r.json()["calls"])


def call_record(agent: AgentProcess, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
    """The agent's record of one call; it is written just after the response ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for call in recorded_calls(agent):
            if call["request_id"] == request_id:
                return call
        time.sleep(0.02)
    raise AssertionError(f"no call record for {request_id}")


def token_fields(usage: Any) -> dict[str, int]:
    names = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_5m_tokens",
             "cache_write_1h_tokens", "reasoning_tokens")
    if isinstance(usage, dict):
        return {n: usage[n] for n in names}
    return {n: getattr(usage, n) for n in names}
