"""The intercept CA on disk, and `governor trust-ca [--undo]`.

Files, in `<data_dir>/mitmproxy/` (0700), where mitmproxy's TLS layer looks
for its CA (`mitmproxy-ca.pem`: key + certificate, 0600):
- `mitmproxy-ca.pem`      key and certificate (mitmproxy signs leaf certificates with it)
- `governor-ca.pem`       the certificate alone (NODE_EXTRA_CA_CERTS, OS stores)
- `ca-bundle.pem`         the system's CAs plus ours (SSL_CERT_FILE, REQUESTS_CA_BUNDLE,
                          which replace a runtime's bundle instead of adding to it)

Installing in the OS stores is a list of `Step`s per OS (what each would run is
testable anywhere; `run_steps` runs them):
- macOS: `security add-trusted-cert` into the login keychain (`delete-certificate` to undo)
- Windows: `certutil -user -addstore Root` (`-delstore Root <serial>` to undo)
- Linux: the certificate into `/usr/local/share/ca-certificates` and `update-ca-certificates`
  (with sudo unless root), plus NSS (`certutil -d sql:$HOME/.pki/nssdb`) when that database exists.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import certifi

from agent.core.ca import CA, PRODUCT, generate

CONF_DIR = "mitmproxy"
CA_PEM = "mitmproxy-ca.pem"  # mitmproxy's file name (options.CONF_BASENAME + "-ca.pem")
CERT_PEM = "governor-ca.pem"
BUNDLE_PEM = "ca-bundle.pem"
SLUG = "governor-local-ca"


@dataclass(frozen=True, slots=True)
class CaFiles:
    confdir: Path

    @property
    def key_and_cert(self) -> Path:
        return self.confdir / CA_PEM

    @property
    def cert(self) -> Path:
        return self.confdir / CERT_PEM

    @property
    def bundle(self) -> Path:
        return self.confdir / BUNDLE_PEM

    def load(self) -> CA:
        raw = self.key_and_cert.read_bytes()
        start = raw.index(b"-----BEGIN CERTIFICATE-----")
        return CA(raw[:start], raw[start:])


def machine_name() -> str:
    return socket.gethostname().split(".")[0] or "this-machine"


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path.with_suffix(".tmp"), 0o600)
    os.replace(path.with_suffix(".tmp"), path)


def system_bundle() -> Path:
    for candidate in ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"):
        if Path(candidate).is_file():
            return Path(candidate)
    return Path(certifi.where())


def _ours(files: CaFiles) -> CA | None:
    try:
        ca = files.load()
        return ca if ca.common_name.startswith(PRODUCT) else None
    except (OSError, ValueError):
        return None


def ensure_ca(data_dir: Path, machine: str | None = None) -> CaFiles:
    """The data dir's CA, generated on first use; never replaced once made."""
    files = CaFiles(data_dir / CONF_DIR)
    files.confdir.mkdir(parents=True, exist_ok=True)
    os.chmod(files.confdir, 0o700)
    ca = _ours(files)
    if ca is None:  # none yet, or mitmproxy's own default: ours replaces it before any leaf is signed
        ca = generate(machine or machine_name())
        _write_private(files.key_and_cert, ca.key_pem + ca.cert_pem)
    os.chmod(files.key_and_cert, 0o600)
    if not files.cert.exists() or files.cert.read_bytes() != ca.cert_pem:
        files.cert.write_bytes(ca.cert_pem)
    bundle = system_bundle().read_bytes().rstrip(b"\n") + b"\n" + ca.cert_pem
    if not files.bundle.exists() or files.bundle.read_bytes() != bundle:
        files.bundle.write_bytes(bundle)
    return files


def runtime_env(files: CaFiles) -> dict[str, str]:
    """What a runtime needs to trust the CA without the OS store."""
    return {
        "NODE_EXTRA_CA_CERTS": str(files.cert),  # Node adds these to its own roots
        "SSL_CERT_FILE": str(files.bundle),  # OpenSSL-based runtimes: replaces the bundle
        "REQUESTS_CA_BUNDLE": str(files.bundle),  # Python requests
    }


# -- OS trust stores ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    describe: str
    argv: tuple[str, ...]
    optional: bool = False  # a missing tool skips it (NSS's certutil)


@dataclass(frozen=True, slots=True)
class LinuxStore:
    anchors: Path = Path("/usr/local/share/ca-certificates")
    update: tuple[str, ...] = ("update-ca-certificates",)
    nssdb: Path | None = None  # default: $HOME/.pki/nssdb when it exists
    sudo: bool = field(default_factory=lambda: hasattr(os, "geteuid") and os.geteuid() != 0)


def _nss(home: Path, store: LinuxStore) -> Path | None:
    db = store.nssdb or home / ".pki" / "nssdb"
    return db if db.is_dir() else None


def install_steps(system: str, files: CaFiles, ca: CA, home: Path, store: LinuxStore | None = None) -> list[Step]:
    cert, name = str(files.cert), ca.common_name
    if system == "Darwin":
        keychain = str(home / "Library" / "Keychains" / "login.keychain-db")
        return [Step("trust in the login keychain", ("security", "add-trusted-cert", "-r", "trustRoot", "-k", keychain, cert))]
    if system == "Windows":
        return [Step("add to the user's Root store", ("certutil", "-user", "-addstore", "Root", cert))]
    store = store or LinuxStore()
    sudo = ("sudo",) if store.sudo else ()
    steps = [
        Step(f"copy to {store.anchors}", sudo + ("install", "-m", "0644", cert, str(store.anchors / f"{SLUG}.crt"))),
        Step("rebuild the system CA bundle", sudo + store.update),
    ]
    nss = _nss(home, store)
    if nss is not None:
        steps.append(Step("trust in NSS (Chrome, Firefox)", ("certutil", "-d", f"sql:{nss}", "-A", "-t", "C,,", "-n", name, "-i", cert), optional=True))
    return steps


def remove_steps(system: str, files: CaFiles, ca: CA, home: Path, store: LinuxStore | None = None) -> list[Step]:
    name = ca.common_name
    if system == "Darwin":
        keychain = str(home / "Library" / "Keychains" / "login.keychain-db")
        return [Step("remove from the login keychain", ("security", "delete-certificate", "-c", name, keychain))]
    if system == "Windows":
        serial = format(ca.cert.serial_number, "x")
        return [Step("remove from the user's Root store", ("certutil", "-user", "-delstore", "Root", serial))]
    store = store or LinuxStore()
    sudo = ("sudo",) if store.sudo else ()
    steps = [
        Step(f"remove from {store.anchors}", sudo + ("rm", "-f", str(store.anchors / f"{SLUG}.crt"))),
        Step("rebuild the system CA bundle", sudo + store.update + ("--fresh",)),
    ]
    nss = _nss(home, store)
    if nss is not None:
        steps.append(Step("remove from NSS", ("certutil", "-d", f"sql:{nss}", "-D", "-n", name), optional=True))
    return steps


def run_steps(steps: list[Step], say: Callable[[str], None] = print) -> int:
    """Run each step; the first failure stops with its exit code (optional steps are skipped if missing)."""
    for step in steps:
        if shutil.which(step.argv[0]) is None:
            if step.optional:
                say(f"skipped: {step.describe} ({step.argv[0]} not installed)")
                continue
            say(f"governor: cannot {step.describe}: {step.argv[0]} not found")
            return 127
        done = subprocess.run(step.argv, capture_output=True, text=True)
        if done.returncode != 0:
            say(f"governor: {step.describe} failed ({' '.join(step.argv)}):\n{done.stderr.strip()}")
            return done.returncode
        say(f"ok: {step.describe}")
    return 0


def trust_ca(data_dir: Path, undo: bool = False, home: Path | None = None, store: LinuxStore | None = None) -> int:
    files = ensure_ca(data_dir)
    ca = files.load()
    system, home = platform.system(), home or Path.home()
    steps = (remove_steps if undo else install_steps)(system, files, ca, home, store)
    code = run_steps(steps)
    if code == 0 and not undo:
        print(f"\n{ca.common_name}  SHA-256 {ca.fingerprint_sha256}")
        print("Runtimes that ignore the OS store need (`governor setup --proxy <tool>` sets them):")
        for key, value in runtime_env(files).items():
            print(f"  export {key}={value}" if sys.platform != "win32" else f"  set {key}={value}")
    return code
