"""Token usage of one model call, in one convention for every provider.

Convention (the Anthropic one, which is also what spend commands carry):
- `input_tokens`: prompt tokens billed at the base input price, i.e. *excluding*
  cache reads and cache writes. OpenAI's `prompt_tokens` and Gemini's
  `promptTokenCount` include cached tokens, so their taps subtract them.
- `output_tokens`: all billed output tokens, reasoning/thinking included.
- `reasoning_tokens`: the part of `output_tokens` spent on reasoning (informational).
- `cache_write_5m_tokens` / `cache_write_1h_tokens`: Anthropic cache creation by TTL;
  a provider that reports one undifferentiated number puts it in the 5 m bucket.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    model: str | None = None
    stop_reason: str | None = None
    # False when the response ended without the provider reporting usage
    # (truncated stream, client disconnect before the usage frame).
    reported: bool = False
    # The provider's error type or code when the body or stream carried an
    # error (`overloaded_error`, `RESOURCE_EXHAUSTED`, …); None otherwise.
    error: str | None = None

    @property
    def cache_write_tokens(self) -> int:
        return self.cache_write_5m_tokens + self.cache_write_1h_tokens

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens + self.output_tokens
