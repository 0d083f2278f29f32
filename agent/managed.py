"""Managed settings: what IT pushes through the MDM, read on top of every other
layer and locked (config.py ignores a user or environment value for a managed
key, with a warning).

One reader per OS, each returning the same `Managed` (values plus, per key,
where it came from, so `governor status` can say "managed by …"):

- macOS: the managed-preferences plist a configuration profile installs for
  our bundle id, `/Library/Managed Preferences/ai.governor.agent.plist`
  (device scope), with `/Library/Managed Preferences/<user>/…` (user scope)
  on top of it, the way CFPreferences resolves forced values.
- Windows: the policy registry key `SOFTWARE\\Policies\\Governor\\Governor`,
  HKCU first, HKLM on top (machine policy wins, as with Group Policy). The
  registry is read through the small `Registry` interface: `WinRegistry`
  (winreg) on Windows, `RecordedRegistry` (a `reg export` file) anywhere,
  which is how the tests read recorded values on Linux.
- Linux: `/etc/governor/managed.toml`, then `/etc/governor/managed.d/*.toml`
  in name order, a later file overriding an earlier one (systemd drop-ins).

Keys are the config-file keys (`control_plane_url`, `listen` …) on every OS.
Environment variables point the readers elsewhere, for tests and for
checking a profile before pushing it: `GOVERNOR_MANAGED_PLATFORM`
(linux|darwin|win32), `GOVERNOR_MANAGED_DIR` (Linux dir),
`GOVERNOR_MANAGED_PREFS_DIR` (macOS dir), `GOVERNOR_MANAGED_REG_FILE`
(Windows: a `.reg` export read instead of the live registry). The override
shows in every key's source. Locking keeps honest users from clobbering the
org's settings by accident; anyone who can run their own binary can bypass a
laptop-side lock, so real enforcement stays with the control plane (the VK).
"""

from __future__ import annotations

import getpass
import logging
import os
import plistlib
import re
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from xml.parsers.expat import ExpatError

log = logging.getLogger("governor.managed")

BUNDLE_ID = "ai.governor.agent"
POLICY_KEY = r"SOFTWARE\Policies\Governor\Governor"
HKLM = "HKEY_LOCAL_MACHINE"
HKCU = "HKEY_CURRENT_USER"
LINUX_DIR = Path("/etc/governor")
MACOS_DIR = Path("/Library/Managed Preferences")

# The settings IT may manage: an allow-list, so a new setting (or a new
# secret) is never manageable by accident. Each is documented, with its type
# and default, in installers/managed-keys.toml, from which every template and
# docs/deploy.md are generated; tests keep the two lists equal.
MANAGED_KEYS = frozenset(
    {
        "allow_setup", "allowed_origins", "allowed_wrappers", "anthropic_base_url", "body_limit_bytes",
        "bundle_path", "bundle_revalidate_s", "changes_timeout_s", "control_plane_url", "drain_pre_wait_s",
        "drain_timeout_s", "enrollment_org", "gemini_base_url", "intercept_enabled", "listen", "log_level",
        "openai_base_url", "otlp_extra_endpoint", "outbox_max_mb", "upstream_timeout_s",
        "azure_openai_api_version", "azure_openai_base_url", "gateway_url", "intercept_hosts", "intercept_listen",
        "upstream_ca_file", "upstream_mode",
    }
)


@dataclass
class Managed:
    """Managed values by config key, and for each key where it came from."""

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def overlay(self, values: Mapping[str, Any], source: str) -> None:
        """Lay `values` on top (a later layer wins key by key)."""
        for key, value in values.items():
            self.values[key] = value
            self.sources[key] = source

    def only(self, allowed: Iterable[str], refused: Iterable[str] = ()) -> Managed:
        """Keep the keys in `allowed` that are also in MANAGED_KEYS; drop, with a
        warning, keys that may never be managed (secrets) and any other key
        (a typo, a setting that is not manageable, a key for a newer agent)."""
        allowed, refused = set(allowed) & MANAGED_KEYS, set(refused)
        kept = Managed()
        for key, value in self.values.items():
            if key in allowed:
                kept.overlay({key: value}, self.sources[key])
            elif key in refused:
                log.warning(
                    "managed_secret_ignored key=%s source=%s hint=%s",
                    key, _quote(self.sources[key]), "secrets come from the keychain or `governor login`, never from MDM",
                )
            else:
                log.warning(
                    "managed_key_unknown key=%s source=%s hint=%s",
                    key, _quote(self.sources[key]), '"not a manageable key; docs/deploy.md lists them"',
                )
        return kept


def _quote(text: str) -> str:
    return '"' + text.replace('"', "'") + '"'


# ---------------------------------------------------------------- Linux


def read_linux(directory: Path = LINUX_DIR) -> Managed:
    managed = Managed()
    files = [directory / "managed.toml", *sorted((directory / "managed.d").glob("*.toml"))]
    for path in files:
        try:
            with path.open("rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError:
            continue
        except (OSError, tomllib.TOMLDecodeError) as exc:
            # A broken managed file must not silently unlock the org's settings: say so loudly.
            log.error("managed_file_unreadable file=%s error=%s", _quote(str(path)), _quote(str(exc)))
            continue
        managed.overlay(data, str(path))
    return managed


# ---------------------------------------------------------------- macOS


def read_macos(directory: Path = MACOS_DIR, user: str | None = None) -> Managed:
    managed = Managed()
    user = user or getpass.getuser()
    for path in (directory / f"{BUNDLE_ID}.plist", directory / user / f"{BUNDLE_ID}.plist"):
        try:
            with path.open("rb") as handle:
                data = plistlib.load(handle)  # XML or binary, as `defaults` and MDMs write them
        except FileNotFoundError:
            continue
        except (OSError, plistlib.InvalidFileException, ValueError, ExpatError) as exc:
            log.error("managed_file_unreadable file=%s error=%s", _quote(str(path)), _quote(str(exc)))
            continue
        if not isinstance(data, dict):
            log.error("managed_file_unreadable file=%s error=%s", _quote(str(path)), '"top level is not a dict"')
            continue
        # Profile bookkeeping keys (PayloadUUID …) are not settings.
        managed.overlay({k: v for k, v in data.items() if not k.startswith("Payload")}, str(path))
    return managed


# ---------------------------------------------------------------- Windows


class Registry(Protocol):
    def values(self, hive: str, path: str) -> dict[str, Any] | None:
        """The values under `hive\\path` (REG_SZ → str, REG_DWORD/QWORD → int,
        REG_MULTI_SZ → list[str]), or None when the key does not exist."""
        ...


class WinRegistry:
    """The live registry through `winreg` (Windows only)."""

    def values(self, hive: str, path: str) -> dict[str, Any] | None:
        import winreg  # type: ignore[import-not-found,unused-ignore]

        root = {HKLM: winreg.HKEY_LOCAL_MACHINE, HKCU: winreg.HKEY_CURRENT_USER}[hive]
        try:
            # The 64-bit view: a per-machine x64 MSI and ADMX write there.
            key = winreg.OpenKey(root, path, 0, winreg.KEY_READ | winreg.KEY_WOW64_64KEY)
        except FileNotFoundError:
            return None
        found: dict[str, Any] = {}
        with key:
            index = 0
            while True:
                try:
                    name, value, kind = winreg.EnumValue(key, index)
                except OSError:
                    break
                index += 1
                if kind in (winreg.REG_SZ, winreg.REG_EXPAND_SZ, winreg.REG_DWORD, winreg.REG_QWORD, winreg.REG_MULTI_SZ):
                    found[name] = value
        return found


class RecordedRegistry:
    """Registry values recorded ahead of time: a dict, or a `reg export` /
    regedit `.reg` file (UTF-16 with BOM as Windows writes it, or UTF-8)."""

    def __init__(self, keys: Mapping[tuple[str, str], Mapping[str, Any]]):
        self._keys = {(hive.upper(), path.lower()): dict(values) for (hive, path), values in keys.items()}

    def values(self, hive: str, path: str) -> dict[str, Any] | None:
        return self._keys.get((hive.upper(), path.lower()))

    @classmethod
    def from_reg_file(cls, path: Path) -> RecordedRegistry:
        return cls(parse_reg(path.read_bytes()))


_HIVE_ALIASES = {"HKLM": HKLM, "HKCU": HKCU}
_REG_VALUE = re.compile(r'^"((?:[^"\\]|\\.)*)"=(.*)$')


def parse_reg(data: bytes) -> dict[tuple[str, str], dict[str, Any]]:
    """Parse a `.reg` export into {(hive, path): {name: value}}."""
    text = data.decode("utf-16") if data[:2] in (b"\xff\xfe", b"\xfe\xff") else data.decode("utf-8-sig")
    text = re.sub(r"\\\r?\n\s*", "", text)  # hex values continue over lines ending in "\"
    keys: dict[tuple[str, str], dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(";") or line.startswith("Windows Registry Editor") or line == "REGEDIT4":
            continue
        if line.startswith("[") and line.endswith("]"):
            hive, _, path = line[1:-1].partition("\\")
            current = None if hive.startswith("-") else keys.setdefault((_HIVE_ALIASES.get(hive, hive), path), {})
            continue
        match = _REG_VALUE.match(line)
        if current is None or match is None:
            continue
        name = re.sub(r"\\(.)", r"\1", match.group(1))
        value = _reg_value(match.group(2))
        if value is not None:
            current[name] = value
    return keys


def _reg_value(spec: str) -> Any:
    if spec.startswith('"') and spec.endswith('"'):
        return re.sub(r"\\(.)", r"\1", spec[1:-1])
    if spec.startswith("dword:"):
        return int(spec[6:], 16)
    kind, _, payload = spec.partition(":")
    if not kind.startswith("hex"):
        return None  # "-" (delete) and anything unknown
    raw = bytes(int(b, 16) for b in payload.split(",") if b.strip())
    if kind == "hex(b)":  # REG_QWORD
        return int.from_bytes(raw, "little")
    if kind == "hex(2)":  # REG_EXPAND_SZ
        return raw.decode("utf-16-le").rstrip("\x00")
    if kind == "hex(7)":  # REG_MULTI_SZ
        return [s for s in raw.decode("utf-16-le").split("\x00") if s]
    return None  # REG_BINARY: no setting takes bytes


def read_windows(registry: Registry) -> Managed:
    managed = Managed()
    for hive in (HKCU, HKLM):
        values = registry.values(hive, POLICY_KEY)
        if values:
            managed.overlay(values, f"{hive}\\{POLICY_KEY}")
    return managed


# ---------------------------------------------------------------- entry point


def read_managed(environ: Mapping[str, str] | None = None, platform: str | None = None) -> Managed:
    """Managed settings for this machine and user (unfiltered: config.py keeps the settings it knows)."""
    env = os.environ if environ is None else environ
    platform = env.get("GOVERNOR_MANAGED_PLATFORM") or platform or sys.platform
    if platform == "darwin":
        return read_macos(Path(env.get("GOVERNOR_MANAGED_PREFS_DIR") or MACOS_DIR))
    if platform == "win32":
        recorded = env.get("GOVERNOR_MANAGED_REG_FILE")
        if recorded:
            registry: Registry = RecordedRegistry.from_reg_file(Path(recorded))
            managed = read_windows(registry)
            managed.sources = {k: f"{v} (recorded in {recorded})" for k, v in managed.sources.items()}
            return managed
        return read_windows(WinRegistry())
    return read_linux(Path(env.get("GOVERNOR_MANAGED_DIR") or LINUX_DIR))


def coerce(value: Any, wants_list: bool) -> Any:
    """Registry and plist values as pydantic expects them: a list setting also
    accepts a JSON list or a comma-separated string (REG_SZ, a TOML string)."""
    if wants_list and isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value
