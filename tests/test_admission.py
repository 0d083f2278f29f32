"""What a call puts at stake: the budgets it debits and its worst case (pure)."""

from __future__ import annotations

import time

from agent.core.admission import plan_admission, provider_ids, requested_max_output
from agent.core.bundle import parse_bundle
from agent.core.dialects import Dialect, Endpoint, Operation

NOW = time.time()


def _budget(budget_id: str, provider_key: str | None = None) -> dict:
    return {"id": budget_id, "scope": "virtual_key", "scope_id": "vk_1", "window": "total", "limit_micro_usd": 10_000_000,
            "spent_micro_usd": 0, "on_breach": "block", "provider_key": provider_key}


def test_provider_filtered_budgets_apply_to_their_provider_only():
    bundle = parse_bundle({
        "vk_id": "vk_1",
        "providers": [{"id": "mp_01HZXANTH", "type": "anthropic"}, {"id": "mp_01HZXAZURE", "type": "azure"}],
        "budgets": [_budget("all"), _budget("anthropic_only", "mp_01HZXANTH"), _budget("azure_only", "mp_01HZXAZURE")],
    })
    assert provider_ids(bundle, "anthropic") == {"anthropic", "mp_anthropic", "mp_01HZXANTH"}
    body = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": []}
    plan = plan_admission(bundle, Endpoint(Dialect.ANTHROPIC, Operation.GENERATE), body, body["model"], 200, NOW)
    assert sorted(line.budget_id for line in plan.lines) == ["all", "anthropic_only"]
    chat = plan_admission(bundle, Endpoint(Dialect.OPENAI_CHAT, Operation.GENERATE), {"model": "gpt-5.5"}, "gpt-5.5", 200, NOW)
    assert sorted(line.budget_id for line in chat.lines) == ["all", "azure_only"]


def test_worst_case_grows_with_the_output_cap_and_the_prompt():
    endpoint = Endpoint(Dialect.ANTHROPIC, Operation.GENERATE)
    bundle = parse_bundle({})
    small = plan_admission(bundle, endpoint, {"max_tokens": 100}, "claude-sonnet-4-5", 300, NOW).worst_case_nano
    more_output = plan_admission(bundle, endpoint, {"max_tokens": 1000}, "claude-sonnet-4-5", 300, NOW).worst_case_nano
    more_prompt = plan_admission(bundle, endpoint, {"max_tokens": 100}, "claude-sonnet-4-5", 30_000, NOW).worst_case_nano
    assert small < more_output and small < more_prompt


def test_requested_max_output_per_dialect():
    assert requested_max_output(Dialect.ANTHROPIC, {"max_tokens": 64000}) == 64000
    assert requested_max_output(Dialect.OPENAI_CHAT, {"max_completion_tokens": 10, "max_tokens": 99}) == 10
    assert requested_max_output(Dialect.OPENAI_RESPONSES, {"max_output_tokens": 8192}) == 8192
    assert requested_max_output(Dialect.GEMINI, {"generationConfig": {"maxOutputTokens": 512}}) == 512
    assert requested_max_output(Dialect.OPENAI_CHAT, {"max_tokens": True}) is None  # a bool is no cap
