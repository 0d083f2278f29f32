"""What a model call costs, in integer nano-USD, from the bundled price table.

The table (`prices.json`, next to this module; source and date inside it and in
`docs/prices.md`) holds per-token prices for each provider's models. Integer
nano-USD per token keeps every price exact: $0.005 per million tokens is 5.

Matching a model name (after normalising it: lower case, without a `models/`
or `<provider>/` prefix and without a Bedrock `<region>.anthropic.` prefix):

1. the bundle's `prices` overrides, then the bundled table, each in this order:
   a. the exact name;
   b. the longest key that the name extends with a *variant suffix*: a date,
      `-latest`, `-preview…`, `@…`, `[1m]`, `-v1:0` … — a suffix whose first
      segment is a bare one- or two-digit number is a *different version*
      (`claude-opus-4-7` is not a variant of `claude-opus-4`), and `.`
      never starts a variant (`gpt-5.5` is not `gpt-5`);
   c. glob keys (`*`, `?`), the most specific (longest) first.
2. No match: the model is priced as the dearest model of its provider (highest
   output price, then input price) and the quote says `priced_by_fallback`.
   An unknown model is never free; an org that uses it adds a `prices` entry.

Missing cache prices default to the input price: a table or override entry
that does not say what a cache read or write costs is charged as plain input,
never as something cheaper.

Long-context tiers: when a request's prompt (input + cache reads + cache
writes) exceeds `threshold_tokens`, every token of that request is priced at
the tier's rates, as Anthropic, OpenAI and Google bill it.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from agent.core.usage import Usage

PRICE_TABLE_PATH = Path(__file__).with_name("prices.json")

# Conservative bytes-per-token ratio for the admission estimate. English prose
# and code run at ~4 bytes per token; 3 over-estimates them, and CJK text (3
# bytes per character, about one token each) still comes out right.
BYTES_PER_TOKEN_ESTIMATE = 3

PriceSource = Literal["override", "table", "fallback"]


@dataclass(frozen=True, slots=True)
class Rates:
    """Nano-USD per token."""

    input: int
    output: int
    cache_read: int
    cache_write_5m: int
    cache_write_1h: int


@dataclass(frozen=True, slots=True)
class LongContextTier:
    threshold_tokens: int
    rates: Rates


@dataclass(frozen=True, slots=True)
class PriceQuote:
    model: str  # the name that was asked for
    provider: str
    matched: str  # the table or override key that priced it
    source: PriceSource
    rates: Rates
    long_context: LongContextTier | None
    max_output_tokens: int  # the worst case when a request sets no limit
    priced_by_fallback: bool

    def rates_for(self, prompt_tokens: int) -> Rates:
        tier = self.long_context
        if tier is not None and prompt_tokens > tier.threshold_tokens:
            return tier.rates
        return self.rates


def price_for(model: str, provider: str, overrides: Mapping[str, Any] | None = None) -> PriceQuote:
    """The price of `model` served by `provider` (`anthropic`, `openai`, `gemini`)."""
    table = _price_table()
    provider = str(provider).lower()
    name = normalise_model(model)
    provider_models = table.models.get(provider, {})
    default_max_out = table.max_output_by_provider.get(provider, max(table.max_output_by_provider.values()))

    if overrides:
        override_entries = {str(k).lower(): _as_mapping(v) for k, v in overrides.items()}
        key = _match(name, override_entries)
        if key is not None:
            table_key = _match(name, provider_models)
            max_out = _max_output(provider_models[table_key], default_max_out) if table_key else default_max_out
            rates, tier = _parse_entry(override_entries[key])
            return PriceQuote(model, provider, key, "override", rates, tier, max_out, False)

    key = _match(name, provider_models)
    if key is not None:
        entry = provider_models[key]
        rates, tier = _parse_entry(entry)
        return PriceQuote(model, provider, key, "table", rates, tier, _max_output(entry, default_max_out), False)

    key, entry = _dearest(provider_models or {k: v for models in table.models.values() for k, v in models.items()})
    rates, tier = _parse_entry(entry)
    return PriceQuote(model, provider, key, "fallback", rates, tier, _max_output(entry, default_max_out), True)


def cost_nano_usd(usage: Usage, quote: PriceQuote) -> int:
    """The billed cost of one call (Usage convention: input excludes cache tokens)."""
    prompt = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
    r = quote.rates_for(prompt)
    return (
        usage.input_tokens * r.input
        + usage.cache_read_tokens * r.cache_read
        + usage.cache_write_5m_tokens * r.cache_write_5m
        + usage.cache_write_1h_tokens * r.cache_write_1h
        + usage.output_tokens * r.output
    )


def worst_case_nano_usd(est_input_tokens: int, max_output_tokens: int | None, quote: PriceQuote) -> int:
    """The most a call can cost: what admission reserves before it is forwarded.

    Every prompt token might be written to the 1 h cache (the dearest way to
    bill input; Claude Code asks for it), and the model might use every output
    token it is allowed. `max_output_tokens=None` means the request set no
    limit: the model's cap applies.
    """
    out = quote.max_output_tokens if max_output_tokens is None else max(0, max_output_tokens)
    est = max(0, est_input_tokens)
    r = quote.rates_for(est)
    dearest_input = max(r.input, r.cache_write_5m, r.cache_write_1h)
    return est * dearest_input + out * r.output


def estimate_input_tokens(body: bytes | str | int) -> int:
    """A cheap, conservative token count for a request body (or its length in bytes)."""
    if isinstance(body, int):
        n_bytes = body
    elif isinstance(body, str):
        n_bytes = len(body.encode("utf-8"))
    else:
        n_bytes = len(body)
    return math.ceil(max(0, n_bytes) / BYTES_PER_TOKEN_ESTIMATE)


def default_max_output_tokens(model: str, provider: str, overrides: Mapping[str, Any] | None = None) -> int:
    """The output cap assumed when a request does not set one (the model's own cap)."""
    return price_for(model, provider, overrides).max_output_tokens


def normalise_model(model: str) -> str:
    name = model.strip().lower()
    name = name.removeprefix("models/")  # Gemini's resource names
    if "/" in name:  # "anthropic/claude-…", "openai/gpt-5"
        name = name.rsplit("/", 1)[1]
    # Bedrock inference profiles: "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
    name = re.sub(r"^(?:[a-z]{2,4}\.)?anthropic\.", "", name)
    return name


# --- matching ---------------------------------------------------------------

_GLOB_CHARS = re.compile(r"[*?]")
# A suffix that starts a different version rather than a variant: "-7", "-5-2025…".
_VERSION_SUFFIX = re.compile(r"^[-_@:](\d{1,2})(?:$|[-_@:.\[])")


def _is_variant_suffix(rest: str) -> bool:
    if rest[0] not in "-_@:[":
        return False
    return _VERSION_SUFFIX.match(rest) is None


def _match(name: str, entries: Mapping[str, Any]) -> str | None:
    if name in entries:
        return name
    best: str | None = None
    for key in entries:
        if _GLOB_CHARS.search(key) or not name.startswith(key) or len(name) == len(key):
            continue
        if _is_variant_suffix(name[len(key) :]) and (best is None or len(key) > len(best)):
            best = key
    if best is not None:
        return best
    globs = [k for k in entries if _GLOB_CHARS.search(k) and fnmatch.fnmatchcase(name, k)]
    # The glob with the most literal characters is the most specific one.
    return max(globs, key=lambda k: len(_GLOB_CHARS.sub("", k)), default=None)


def _dearest(entries: Mapping[str, Mapping[str, Any]]) -> tuple[str, Mapping[str, Any]]:
    key = max(entries, key=lambda k: (int(entries[k]["output"]), int(entries[k]["input"]), k))
    return key, entries[key]


# --- table loading ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Table:
    models: dict[str, dict[str, dict[str, Any]]]
    max_output_by_provider: dict[str, int]


@cache
def _price_table() -> _Table:
    raw = json.loads(PRICE_TABLE_PATH.read_text(encoding="utf-8"))
    models = {p: {k.lower(): v for k, v in entries.items()} for p, entries in raw["models"].items()}
    max_out = {p: int(d["max_output_tokens"]) for p, d in raw["provider_defaults"].items()}
    for entries in models.values():
        for entry in entries.values():
            _parse_entry(entry)  # fail at load, not on the first request for that model
    return _Table(models, max_out)


def price_table_metadata() -> dict[str, Any]:
    """Source and date of the bundled table, for the local API and `governor doctor`."""
    raw = json.loads(PRICE_TABLE_PATH.read_text(encoding="utf-8"))
    return {"checked_at": raw["checked_at"], "sources": raw["sources"], "unit": raw["unit"]}


def _as_mapping(value: Any) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    if hasattr(value, "model_dump"):  # a pydantic model from the bundle
        dumped: Mapping[str, Any] = value.model_dump(exclude_none=True)
        return dumped
    return {k: getattr(value, k) for k in ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h") if getattr(value, k, None) is not None}


def _rates(entry: Mapping[str, Any]) -> Rates:
    try:
        inp = int(entry["input"])
        out = int(entry["output"])
    except KeyError as e:
        raise ValueError(f"price entry {dict(entry)!r} has no {e.args[0]!r} price") from None
    rates = Rates(
        input=inp,
        output=out,
        cache_read=int(entry.get("cache_read", inp)),
        cache_write_5m=int(entry.get("cache_write_5m", inp)),
        cache_write_1h=int(entry.get("cache_write_1h", inp)),
    )
    if min(rates.input, rates.output, rates.cache_read, rates.cache_write_5m, rates.cache_write_1h) < 0:
        raise ValueError(f"price entry {dict(entry)!r} has a negative price")
    return rates


def _parse_entry(entry: Mapping[str, Any]) -> tuple[Rates, LongContextTier | None]:
    tier_raw = entry.get("long_context")
    tier = None
    if tier_raw:
        tier = LongContextTier(int(tier_raw["threshold_tokens"]), _rates(tier_raw))
    return _rates(entry), tier


def _max_output(entry: Mapping[str, Any], default: int) -> int:
    return int(entry.get("max_output_tokens", default))
