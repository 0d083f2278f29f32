"""The bundled price table, model matching, overrides, fallback and cost arithmetic."""

from __future__ import annotations

import json

import pytest

from agent.core.bundle import ModelPrice
from agent.core.prices import (
    PRICE_TABLE_PATH,
    cost_nano_usd,
    default_max_output_tokens,
    estimate_input_tokens,
    price_for,
    price_table_metadata,
    worst_case_nano_usd,
)
from agent.core.usage import Usage


def test_table_is_dated_sourced_and_integer() -> None:
    raw = json.loads(PRICE_TABLE_PATH.read_text())
    assert raw["checked_at"] and set(raw["sources"]) == {"anthropic", "openai", "gemini"}
    for models in raw["models"].values():
        for entry in models.values():
            for key in ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h"):
                assert isinstance(entry.get(key, 0), int)
    assert price_table_metadata()["checked_at"] == raw["checked_at"]


@pytest.mark.parametrize(
    ("model", "provider", "matched"),
    [
        ("claude-haiku-4-5-20251001", "anthropic", "claude-haiku-4-5"),
        ("claude-haiku-4-5", "anthropic", "claude-haiku-4-5"),
        ("claude-sonnet-4-5-20250929", "anthropic", "claude-sonnet-4-5"),
        ("claude-sonnet-4-20250514", "anthropic", "claude-sonnet-4"),
        ("claude-opus-4-1-20250805", "anthropic", "claude-opus-4-1"),
        ("claude-opus-4-5@20251101", "anthropic", "claude-opus-4-5"),  # Vertex
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic", "claude-sonnet-4-5"),  # Bedrock
        ("claude-sonnet-4-6[1m]", "anthropic", "claude-sonnet-4-6"),
        ("claude-3-7-sonnet-latest", "anthropic", "claude-3-7-sonnet"),
        ("gpt-5", "openai", "gpt-5"),
        ("gpt-5-2025-08-07", "openai", "gpt-5"),
        ("gpt-5-codex", "openai", "gpt-5-codex"),
        ("gpt-5.1-codex-mini", "openai", "gpt-5.1-codex-mini"),
        ("gpt-4.1-mini-2025-04-14", "openai", "gpt-4.1-mini"),
        ("gpt-4o-2024-08-06", "openai", "gpt-4o"),
        ("o4-mini-2025-04-16", "openai", "o4-mini"),
        ("openai/gpt-5.4", "openai", "gpt-5.4"),
        ("gemini-2.5-pro", "gemini", "gemini-2.5-pro"),
        ("models/gemini-2.5-flash-lite", "gemini", "gemini-2.5-flash-lite"),
        ("gemini-2.5-flash-preview-09-2025", "gemini", "gemini-2.5-flash"),
        ("gemini-3.1-pro-preview", "gemini", "gemini-3.1-pro"),
        ("gemini-3-flash-preview", "gemini", "gemini-3-flash"),
    ],
)
def test_known_models_match_their_entry(model: str, provider: str, matched: str) -> None:
    quote = price_for(model, provider)
    assert (quote.matched, quote.source, quote.priced_by_fallback) == (matched, "table", False)


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("claude-opus-4-9", "anthropic"),  # a newer minor version is not a variant of claude-opus-4
        ("claude-sonnet-7", "anthropic"),
        ("gpt-5.9", "openai"),  # "." starts a version, never a variant
        ("gpt-7", "openai"),
        ("gemini-9-ultra", "gemini"),
    ],
)
def test_unknown_models_are_priced_as_the_dearest_of_their_provider_and_flagged(model: str, provider: str) -> None:
    quote = price_for(model, provider)
    assert quote.priced_by_fallback and quote.source == "fallback"
    raw = json.loads(PRICE_TABLE_PATH.read_text())["models"][provider]
    assert quote.rates.output == max(e["output"] for e in raw.values())
    assert cost_nano_usd(Usage(input_tokens=1, output_tokens=1), quote) > 0


def test_unknown_provider_falls_back_to_the_dearest_model_of_all() -> None:
    quote = price_for("mystery-1", "somebody")
    assert quote.priced_by_fallback and quote.rates.output >= price_for("gpt-5", "openai").rates.output


def test_bundle_overrides_win_exact_then_prefix_then_glob() -> None:
    overrides = {
        "claude-sonnet-4-5": ModelPrice(input=1, output=2),
        "claude-*": {"input": 10, "output": 20, "cache_read": 1},
        "claude-haiku-*": {"input": 5, "output": 6},
    }
    exact = price_for("claude-sonnet-4-5-20250929", "anthropic", overrides)
    assert (exact.source, exact.matched, exact.rates.input, exact.rates.output) == ("override", "claude-sonnet-4-5", 1, 2)
    # Missing cache prices are charged as input, never as something cheaper.
    assert exact.rates.cache_read == exact.rates.cache_write_5m == exact.rates.cache_write_1h == 1
    assert exact.max_output_tokens == 64000  # the model's own cap still comes from the table
    glob = price_for("claude-haiku-4-5", "anthropic", overrides)
    assert (glob.matched, glob.rates.input) == ("claude-haiku-*", 5)  # the most specific glob
    unknown = price_for("claude-next", "anthropic", overrides)
    assert (unknown.source, unknown.priced_by_fallback, unknown.rates.cache_read) == ("override", False, 1)


def test_cost_follows_the_usage_convention() -> None:
    quote = price_for("claude-sonnet-4-5", "anthropic")
    usage = Usage(input_tokens=1000, output_tokens=500, cache_read_tokens=2000, cache_write_5m_tokens=300, cache_write_1h_tokens=100)
    expected = 1000 * 3000 + 500 * 15000 + 2000 * 300 + 300 * 3750 + 100 * 6000
    assert cost_nano_usd(usage, quote) == expected
    assert cost_nano_usd(Usage(), quote) == 0


def test_long_context_tier_prices_every_token_of_a_long_request() -> None:
    quote = price_for("gemini-2.5-pro", "gemini")
    short = Usage(input_tokens=200_000, output_tokens=1000)
    long = Usage(input_tokens=150_000, cache_read_tokens=50_001, output_tokens=1000)
    assert cost_nano_usd(short, quote) == 200_000 * 1250 + 1000 * 10000
    assert cost_nano_usd(long, quote) == 150_000 * 2500 + 50_001 * 250 + 1000 * 15000
    haiku = price_for("claude-haiku-5-5", "anthropic")
    assert haiku.rates_for(100_001).input == 5 * haiku.rates_for(100_000).input


def test_worst_case_covers_every_way_the_call_can_be_billed() -> None:
    quote = price_for("claude-sonnet-4-5", "anthropic")
    # Input as 1 h cache writes (the dearest), all output tokens used.
    assert worst_case_nano_usd(1000, 4096, quote) == 1000 * 6000 + 4096 * 15000
    assert worst_case_nano_usd(1000, None, quote) == 1000 * 6000 + 64000 * 15000
    usage = Usage(input_tokens=400, cache_write_1h_tokens=600, output_tokens=4096)
    assert cost_nano_usd(usage, quote) <= worst_case_nano_usd(1000, 4096, quote)
    long_quote = price_for("gpt-5.4", "openai")
    assert worst_case_nano_usd(300_000, 10, long_quote) == 300_000 * 5000 + 10 * 22500


def test_estimate_is_cheap_and_conservative() -> None:
    assert estimate_input_tokens(b"") == 0
    assert estimate_input_tokens(b"abcd") == 2
    assert estimate_input_tokens(3000) == 1000
    assert estimate_input_tokens("日本語") == 3  # 9 UTF-8 bytes


def test_default_max_output_per_model_and_provider() -> None:
    assert default_max_output_tokens("gpt-4o", "openai") == 16384
    assert default_max_output_tokens("gemini-2.5-flash", "gemini") == 65536
    assert default_max_output_tokens("claude-opus-4-1", "anthropic") == 32000


def test_a_bad_override_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="output"):
        price_for("gpt-5", "openai", {"gpt-5": {"input": 1}})


def test_docs_list_every_priced_model_and_the_table_date() -> None:
    doc = (PRICE_TABLE_PATH.parents[2] / "docs" / "prices.md").read_text()
    raw = json.loads(PRICE_TABLE_PATH.read_text())
    assert raw["checked_at"] in doc
    missing = [k for models in raw["models"].values() for k in models if f"`{k}`" not in doc]
    assert missing == []
