import json
from pathlib import Path

import pytest

from agent.core.bundle import Bundle, BundleError, parse_bundle
from agent.core.dialects import Dialect
from agent.core.policy import evaluate_request

EXAMPLE = Path(__file__).parent.parent / "docs" / "example-bundle.json"


def test_example_bundle_exercises_every_field():
    raw = EXAMPLE.read_bytes()
    bundle = parse_bundle(raw)
    data = json.loads(raw)
    for name in Bundle.model_fields:
        assert name in data, f"docs/example-bundle.json lacks {name}"
    assert bundle.revision == "145"
    assert bundle.policy_rules.tools.action == "strip"
    assert bundle.policy_rules.mcp.action == "reject"
    assert {b.window for b in bundle.budgets} == {"month", "day", "total"}
    assert bundle.budgets[2].resets_at is None
    assert bundle.prices["claude-sonnet-4-5"].cache_write_1h == 6000
    assert bundle.prices["gemini-2.5-*"].cache_read is None
    assert bundle.cache_rules[0].action.mode == "force"
    assert bundle.fallback.max_attempts == 2
    assert bundle.rate_limits.tpm == 2_000_000


def test_unknown_fields_are_kept_and_ignored():
    bundle = parse_bundle({"routing_mode": "policy", "policy_rules": {"tools": {"deny": [], "future": 1}}})
    assert bundle.model_extra == {"routing_mode": "policy"}
    assert bundle.policy_rules.tools.model_extra == {"future": 1}


def test_empty_bundle_denies_nothing():
    bundle = parse_bundle(b"{}")
    body = {"model": "anything", "tools": [{"name": "Bash"}], "messages": [{"content": "https://x.example"}]}
    decision = evaluate_request(bundle, Dialect.ANTHROPIC, body)
    assert decision.action == "allow" and decision.body is None and decision.model == "anything"
    assert bundle.on_stale == "fail_open" and bundle.max_stale_s is None and bundle.budgets == []


def test_explicit_nulls_mean_defaults():
    bundle = parse_bundle(
        {
            "revision": 7,
            "model_aliases": None,
            "budgets": None,
            "prices": None,
            "policy_rules": {"tools": None, "urls": {"deny": None, "allow": None}},
        }
    )
    assert bundle.revision == "7"
    assert bundle.model_aliases == {} and bundle.budgets == [] and bundle.prices == {}
    assert bundle.policy_rules.tools.is_empty and bundle.policy_rules.urls.is_empty


def test_invalid_regex_names_the_rule():
    with pytest.raises(BundleError) as err:
        parse_bundle({"policy_rules": {"mcp": {"deny": ["ok", "bad(("]}}})
    assert err.value.field == "policy_rules.mcp.deny[1]"
    assert "policy_rules.mcp.deny[1]: invalid RE2 regex 'bad(('" in err.value.message


def test_regex_re2_rejects_is_a_bundle_error():
    # Lookarounds are valid Python regexes but not RE2: the rule would mean
    # something else on the org's gateway, so it is refused here too.
    with pytest.raises(BundleError, match=r"policy_rules\.urls\.allow\[0\]"):
        parse_bundle({"policy_rules": {"urls": {"allow": ["(?!evil)"]}}})


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"budgets": [{"id": "b", "scope": "team", "scope_id": "t", "window": "fortnight", "limit_micro_usd": 1}]},
         "budgets[0].window"),
        ({"budgets": [{"id": "b", "scope": "galaxy", "scope_id": "t", "window": "day", "limit_micro_usd": 1}]},
         "budgets[0].scope"),
        ({"budgets": [{"id": "b", "scope": "team", "scope_id": "t", "window": "day", "limit_micro_usd": -5}]},
         "budgets[0].limit_micro_usd"),
        ({"budgets": [{"id": "b", "scope": "team", "window": "day", "limit_micro_usd": 1}]}, "budgets[0].scope_id"),
        ({"policy_rules": {"tools": {"action": "warn"}}}, "policy_rules.tools.action"),
        ({"on_stale": "maybe"}, "on_stale"),
        ({"prices": {"m": {"input": 1}}}, "prices.m.output"),
        ({"models_allowed": "claude-*"}, "models_allowed"),
        ({"rate_limits": {"rpm": "lots"}}, "rate_limits.rpm"),
    ],
)  # fmt: skip
def test_invalid_field_is_named(data, field):
    with pytest.raises(BundleError) as err:
        parse_bundle(data)
    assert err.value.field == field
    assert field in err.value.message


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_not_a_json_object(raw):
    with pytest.raises(BundleError, match="bundle"):
        parse_bundle(raw)
