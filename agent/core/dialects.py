"""Which wire format a request speaks, read from its method, path and headers.

The gateway serves four dialects on one port. Everything downstream (usage
taps, policy extraction, error envelopes) is keyed on `Dialect`, so this module
is the single place that maps an HTTP request to one.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass


class Dialect(enum.StrEnum):
    ANTHROPIC = "anthropic"  # POST /v1/messages
    OPENAI_CHAT = "openai_chat"  # POST /v1/chat/completions
    OPENAI_RESPONSES = "openai_responses"  # POST /v1/responses
    GEMINI = "gemini"  # POST /v1beta/models/{model}:generateContent …


class Provider(enum.StrEnum):
    ANTHROPIC = "anthropic"
    OPENAI = "openai"
    GEMINI = "gemini"


PROVIDER_OF: dict[Dialect, Provider] = {
    Dialect.ANTHROPIC: Provider.ANTHROPIC,
    Dialect.OPENAI_CHAT: Provider.OPENAI,
    Dialect.OPENAI_RESPONSES: Provider.OPENAI,
    Dialect.GEMINI: Provider.GEMINI,
}


class Operation(enum.StrEnum):
    GENERATE = "generate"  # a billable model call
    COUNT_TOKENS = "count_tokens"  # free, forwarded, not metered
    LIST_MODELS = "list_models"  # free, forwarded, not metered


@dataclass(frozen=True, slots=True)
class Endpoint:
    dialect: Dialect
    operation: Operation
    # Gemini carries the model and the streaming choice in the path.
    path_model: str | None = None
    path_stream: bool = False

    @property
    def provider(self) -> Provider:
        return PROVIDER_OF[self.dialect]


_GEMINI_PATH = re.compile(
    r"^/(?:v1beta|v1)/models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent|countTokens)$"
)


def list_models_dialect(headers: Mapping[str, str]) -> Dialect:
    """`GET /v1/models` is shared by three SDKs; answer in the caller's own dialect.

    google-genai 3.x lists models at `/v1/models` with `x-goog-api-key`; the
    Anthropic SDK always sends `anthropic-version`; everything else is OpenAI.
    """
    lower = {k.lower() for k in headers.keys()}
    if "x-goog-api-key" in lower or "x-goog-api-client" in lower:
        return Dialect.GEMINI
    if "anthropic-version" in lower or "x-api-key" in lower:
        return Dialect.ANTHROPIC
    return Dialect.OPENAI_CHAT


def classify(method: str, path: str, headers: Mapping[str, str], query_key: bool = False) -> Endpoint | None:
    """Map a request to the endpoint it calls; None for a path the gateway does not serve.

    `path` is without the query string. `query_key` says whether a Gemini `?key=`
    was present, which marks a models listing as Gemini's.
    """
    if path.endswith("/") and len(path) > 1:
        path = path.rstrip("/")
    if method == "POST":
        if path == "/v1/messages":
            return Endpoint(Dialect.ANTHROPIC, Operation.GENERATE)
        if path == "/v1/messages/count_tokens":
            return Endpoint(Dialect.ANTHROPIC, Operation.COUNT_TOKENS)
        if path == "/v1/chat/completions":
            return Endpoint(Dialect.OPENAI_CHAT, Operation.GENERATE)
        if path == "/v1/responses":
            return Endpoint(Dialect.OPENAI_RESPONSES, Operation.GENERATE)
        m = _GEMINI_PATH.match(path)
        if m:
            op = Operation.COUNT_TOKENS if m["method"] == "countTokens" else Operation.GENERATE
            return Endpoint(
                Dialect.GEMINI,
                op,
                path_model=m["model"],
                path_stream=m["method"] == "streamGenerateContent",
            )
        return None
    if method == "GET":
        if path in ("/v1/models", "/v1beta/models"):
            if path == "/v1beta/models" or query_key:
                return Endpoint(Dialect.GEMINI, Operation.LIST_MODELS)
            return Endpoint(list_models_dialect(headers), Operation.LIST_MODELS)
    return None
