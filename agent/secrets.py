"""Secrets in the OS keychain, with a 0600 file where no keychain exists.

Headless Linux boxes and CI have no Secret Service; there the secret goes to
`<data_dir>/secrets.json` (0600, directory 0700) and a warning says so once.
"""

from __future__ import annotations

import json
import logging
import os
import secrets as _random
from pathlib import Path

import keyring
import keyring.errors
from keyring.backends import fail

log = logging.getLogger("governor.secrets")
SERVICE = "governor"
_warned = False


def _keychain_available() -> bool:
    return not isinstance(keyring.get_keyring(), fail.Keyring)


def _file(data_dir: Path) -> Path:
    return data_dir / "secrets.json"


def ensure_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _read_file(data_dir: Path) -> dict[str, str]:
    try:
        return dict(json.loads(_file(data_dir).read_text()))
    except FileNotFoundError:
        return {}


def _warn_file_fallback(data_dir: Path) -> None:
    global _warned
    if not _warned:
        log.warning("keychain_unavailable fallback=%s mode=0600", _file(data_dir))
        _warned = True


def get_secret(name: str, data_dir: Path) -> str | None:
    if _keychain_available():
        try:
            return keyring.get_password(SERVICE, name)
        except keyring.errors.KeyringError as exc:
            log.warning("keychain_read_failed name=%s error=%s", name, type(exc).__name__)
    return _read_file(data_dir).get(name)


def set_secret(name: str, value: str, data_dir: Path) -> None:
    if _keychain_available():
        try:
            keyring.set_password(SERVICE, name, value)
            return
        except keyring.errors.KeyringError as exc:
            log.warning("keychain_write_failed name=%s error=%s", name, type(exc).__name__)
    _warn_file_fallback(data_dir)
    ensure_private_dir(data_dir)
    data = _read_file(data_dir)
    data[name] = value
    path = _file(data_dir)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def delete_secret(name: str, data_dir: Path) -> None:
    if _keychain_available():
        try:
            keyring.delete_password(SERVICE, name)
        except keyring.errors.KeyringError:
            pass  # absent already: nothing to wipe
    data = _read_file(data_dir)
    if data.pop(name, None) is not None:
        set_secret_file = _file(data_dir)
        set_secret_file.write_text(json.dumps(data))


def local_key(configured: str | None, data_dir: Path) -> str:
    """The key clients present: configured, else stored, else generated now and stored."""
    if configured:
        return configured
    stored = get_secret("local_key", data_dir)
    if stored:
        return stored
    generated = "gvn-" + _random.token_urlsafe(24)
    set_secret("local_key", generated, data_dir)
    return generated
