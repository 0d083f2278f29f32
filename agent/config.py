"""Settings, layered lowest first: built-in defaults, the user's config file,
environment variables (`GOVERNOR_*`), constructor arguments (tests), then
managed settings from the MDM (agent/managed.py), which win and are locked: a
lower layer's value for a managed key is ignored with a warning, and
`Settings.managed_keys()` says which keys are managed and from where.

Every setting has a default, a config-file key (the field name) and an
environment variable (`GOVERNOR_` + the field name in capitals); README lists
them all. Secrets (provider API keys, the local key) are read from the
environment or the OS keychain only: a secret found in the config file is
ignored with a warning, because config files get copied, synced and pasted.
"""

from __future__ import annotations

import logging
import os
import types
import typing
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import AliasChoices, Field, PrivateAttr, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from agent import managed
from agent.core.dialects import Provider

log = logging.getLogger("governor.config")

APP_NAME = "governor"
SECRET_FIELDS = frozenset(
    {"local_key", "anthropic_api_key", "openai_api_key", "gemini_api_key", "azure_openai_api_key"}
)
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
# Per-user by nature, so never taken from machine-wide managed settings.
UNMANAGEABLE_FIELDS = SECRET_FIELDS | {"data_dir"}
_managed_sources: ContextVar[dict[str, str]] = ContextVar("governor_managed_sources")


def config_file_path() -> Path:
    explicit = os.environ.get("GOVERNOR_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)) / "config.toml"


class _ConfigFileSource(TomlConfigSettingsSource):
    """The user's TOML config file, minus any secret it should not hold."""

    def __init__(self, settings_cls: type[BaseSettings]):
        super().__init__(settings_cls, toml_file=config_file_path())
        for key in sorted(SECRET_FIELDS & self.toml_data.keys()):
            log.warning(
                "config_secret_ignored key=%s file=%s hint=%s",
                key,
                config_file_path(),
                f"set GOVERNOR_{key.upper()} or store it with `governor secret set {key}`",
            )
            del self.toml_data[key]


def _wants_list(annotation: Any) -> bool:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_wants_list(arg) for arg in typing.get_args(annotation))
    return typing.get_origin(annotation) is list


class _ManagedSource(PydanticBaseSettingsSource):
    """Managed settings (MDM): the top layer. Warns about every lower-layer
    value it overrides, since that value is locked out."""

    def __init__(self, settings_cls: type[BaseSettings], lower: dict[str, set[str]]):
        super().__init__(settings_cls)
        fields = settings_cls.model_fields
        self.managed = managed.read_managed().only(set(fields) - UNMANAGEABLE_FIELDS, refused=UNMANAGEABLE_FIELDS)
        self.values = {k: managed.coerce(v, _wants_list(fields[k].annotation)) for k, v in self.managed.values.items()}
        for key in sorted(self.values):
            for layer in sorted(name for name, keys in lower.items() if key in keys):
                log.warning(
                    "managed_key_locked key=%s ignored=%s managed_by=%s",
                    key, layer, '"' + self.managed.sources[key].replace('"', "'") + '"',
                )

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        _managed_sources.set(dict(self.managed.sources))
        return dict(self.values)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GOVERNOR_", extra="ignore", validate_default=True)

    listen: str = "127.0.0.1:8787"
    data_dir: Path = Field(default_factory=lambda: Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)))
    log_level: str = "INFO"

    # The key coding tools present to the gateway. Generated on first run and
    # kept in the keychain when unset; `governor key` shows it.
    local_key: SecretStr | None = None

    anthropic_base_url: str = "https://api.anthropic.com"
    anthropic_api_key: SecretStr | None = None
    openai_base_url: str = "https://api.openai.com"
    openai_api_key: SecretStr | None = None
    gemini_base_url: str = "https://generativelanguage.googleapis.com"
    gemini_api_key: SecretStr | None = None

    body_limit_bytes: int = 32 * 1024 * 1024
    # Browser origins allowed to call the gateway (none: no web page may spend the budget).
    allowed_origins: list[str] = Field(default_factory=list)
    upstream_timeout_s: float = 600.0

    # Routing (docs/routing.md): how each provider's calls leave the laptop.
    upstream_mode: str = "direct"  # direct | gateway | passthrough, for every provider
    upstream_modes: dict[str, str] = Field(default_factory=dict)  # per provider, e.g. {"anthropic": "gateway"}
    gateway_url: str | None = None  # the org's AI gateway (mode `gateway`, with the personal VK)
    azure_openai_base_url: str | None = None  # a fallback for OpenAI calls, e.g. https://res.openai.azure.com/openai
    azure_openai_api_key: SecretStr | None = None
    azure_openai_api_version: str | None = None  # appended as ?api-version= when set
    upstream_connect_timeout_s: float = 10.0
    circuit_threshold: int = 5  # failures (5xx, timeout, network) within the window that open the circuit
    circuit_window_s: float = 60.0
    circuit_cooldown_s: float = 30.0
    # Intercept mode (`intercept_enabled`): the HTTPS_PROXY listener and what it decrypts.
    intercept_listen: str = "127.0.0.1:8788"
    intercept_hosts: list[str] = Field(default_factory=list)  # decrypted besides the built-in LLM hosts
    upstream_ca_file: Path | None = None  # extra CAs trusted for upstream TLS (a corporate TLS proxy)
    # host -> ip:port, like curl --resolve (split-horizon DNS, tests).
    resolve: dict[str, str] = Field(default_factory=dict)

    # SIGTERM: readiness goes 503, wait `drain_pre_wait_s`, then give in-flight
    # requests (streams included) up to `drain_timeout_s` to finish.
    drain_pre_wait_s: float = 1.0
    drain_timeout_s: float = 15.0

    # Standalone governance: a bundle JSON file (reloaded when it changes).
    bundle_path: Path | None = Field(
        default=None, validation_alias=AliasChoices("GOVERNOR_BUNDLE", "GOVERNOR_BUNDLE_PATH", "bundle_path")
    )

    # Usually set by IT through managed settings (docs/deploy.md lists them).
    control_plane_url: str | None = None  # none: standalone on `bundle_path`
    enrollment_org: str | None = None  # org slug / SSO domain `governor login` pre-fills
    intercept_enabled: bool = False  # the HTTPS_PROXY listener (decrypts LLM provider hosts only)
    allowed_wrappers: list[str] | None = None  # `governor <tool>` wrappers allowed; none: all
    allow_setup: bool = True  # may `governor setup` edit the user's tool configs
    outbox_max_mb: int = 256  # spend/trace outbox cap; oldest records dropped beyond it
    # Control-plane sync (docs/control-plane.md): bundle revalidation (capped at 30 s),
    # the /changes long-poll's hold, and an org's own OTLP collector (`…/v1/traces`).
    bundle_revalidate_s: float = 25.0
    changes_timeout_s: int = 10
    otlp_extra_endpoint: str | None = None

    _managed: dict[str, str] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any) -> None:
        self._managed = _managed_sources.get({})

    def managed_keys(self) -> dict[str, str]:
        """Keys set by managed settings (and locked), each with where it came from."""
        return dict(self._managed)

    @field_validator("listen")
    @classmethod
    def _loopback_only(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"listen must be host:port, got {value!r}")
        if host not in LOOPBACK_HOSTS:
            raise ValueError(
                f"refusing to listen on {host}: the gateway serves this laptop only (use 127.0.0.1)"
            )
        return value

    @field_validator("intercept_listen")
    @classmethod
    def _intercept_loopback_only(cls, value: str) -> str:
        return cls._loopback_only(value)

    @property
    def intercept_port(self) -> int:
        return int(self.intercept_listen.rpartition(":")[2])

    @property
    def listen_host(self) -> str:
        host = self.listen.rpartition(":")[0]
        return "::1" if host == "[::1]" else host

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    def base_url(self, provider: Provider) -> str:
        return str(getattr(self, f"{provider.value}_base_url")).rstrip("/")

    def api_key(self, provider: Provider) -> SecretStr | None:
        value: SecretStr | None = getattr(self, f"{provider.value}_api_key")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # First wins: managed, constructor, environment, config file, defaults.
        _managed_sources.set({})
        config_file = _ConfigFileSource(settings_cls)
        env_keys = {k.upper() for k in os.environ}
        lower = {
            "init": set(getattr(init_settings, "init_kwargs", {})),
            "env": {name for name in settings_cls.model_fields if f"GOVERNOR_{name.upper()}" in env_keys},
            "config_file": set(config_file.toml_data),
        }
        return (_ManagedSource(settings_cls, lower), init_settings, env_settings, config_file)


def load_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)
