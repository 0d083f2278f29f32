"""Installers: build the real artefacts and read them back.

- .deb: built with dpkg-deb, listed (-c) and inspected (-I), then installed,
  upgraded and purged by the real dpkg in a throwaway root
  (`--root … --force-script-chrootless`, so the maintainer scripts run with
  $DPKG_ROOT), and the installed /opt/governor/governor started through the
  self-test (health + one proxied call).
- .rpm (when rpmbuild exists) and .msi (when wixl exists): built, tables read.
- macOS: LaunchAgents, component plist and distribution XML parsed; scripts
  pass `sh -n` and shellcheck.

The runtime inside the packages is a stand-in launcher of this checkout's
agent, so the file stays fast; with GOVERNOR_TEST_PYINSTALLER=1 the real
PyInstaller one-folder runtime is built once (about 75 s on 2 cores, needs
network for `uv run --with pyinstaller` the first time) and used instead.
"""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from agent import managed

REPO = Path(__file__).resolve().parents[1]
INSTALLERS = REPO / "installers"
PYINSTALLER = os.environ.get("GOVERNOR_TEST_PYINSTALLER") == "1"
BUILD_VERSION = "0.1.0"
# The real runtime is ~260 MB: building it and packing it into .debs takes minutes.
pytestmark = pytest.mark.timeout(900 if PYINSTALLER else 120)


def run(*argv: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=300, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{argv} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result  # type: ignore[no-any-return]


def needs(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (apt-get install {APT.get(tool, tool)})")


APT = {"dpkg-deb": "dpkg", "rpmbuild": "rpm", "wixl": "wixl", "msiinfo": "msitools", "shellcheck": "shellcheck"}


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runtime folder holding an executable `governor`."""
    if PYINSTALLER:
        dist = tmp_path_factory.mktemp("dist")
        # From the committed sources: a shared working tree may hold someone's half-done edit.
        env = {**os.environ, "GOVERNOR_DIST": str(dist), "GOVERNOR_BUILD_VERSION": BUILD_VERSION, "GOVERNOR_BUILD_REF": "HEAD"}
        run(INSTALLERS / "build.sh", "runtime", env=env)
        return dist / "governor"
    folder = tmp_path_factory.mktemp("runtime") / "governor"
    folder.mkdir()
    launcher = folder / "governor"
    launcher.write_text(f'#!/bin/sh\nPYTHONPATH="{REPO}" exec "{sys.executable}" -m agent.cli "$@"\n')
    launcher.chmod(0o755)
    return folder


# ---------------------------------------------------------------- PyInstaller


@pytest.mark.skipif(not PYINSTALLER, reason="set GOVERNOR_TEST_PYINSTALLER=1 to build the PyInstaller runtime (~75 s)")
def test_pyinstaller_runtime_passes_the_selftest(runtime: Path) -> None:
    assert (runtime / "_internal").is_dir(), "one-folder layout"
    out = run(sys.executable, INSTALLERS / "selftest.py", runtime / "governor", "--version", BUILD_VERSION)
    assert "selftest: ok" in out.stdout


def test_spec_stages_sources_and_bakes_the_version() -> None:
    spec = (INSTALLERS / "pyinstaller" / "governor.spec").read_text()
    assert 'STAGE / "agent" / "_build.py"' in spec and "VERSION = {VERSION!r}" in spec
    assert not (REPO / "agent" / "_build.py").exists(), "the build must not write into the checkout"
    for hook in ("linux", "macos", "windows"):
        assert (INSTALLERS / "pyinstaller" / "hooks" / f"hook-mitmproxy_{hook}.py").exists()


# ---------------------------------------------------------------- Linux .deb


def build_deb(runtime: Path, version: str, out: Path) -> Path:
    needs("dpkg-deb")
    # xz (the default) on the real runtime costs ~1 min per package: tests skip compression then.
    env = {**os.environ, "GOVERNOR_DEB_COMPRESSION": "none" if PYINSTALLER else "xz"}
    return Path(run(INSTALLERS / "linux" / "build-deb.sh", runtime, version, out, env=env).stdout.strip().splitlines()[-1])


def test_deb_control_and_contents(runtime: Path, tmp_path: Path) -> None:
    deb = build_deb(runtime, BUILD_VERSION, tmp_path)
    info = run("dpkg-deb", "-f", deb).stdout
    fields = dict(line.split(": ", 1) for line in info.splitlines() if ": " in line and not line.startswith(" "))
    assert fields["Package"] == "governor" and fields["Version"] == BUILD_VERSION
    assert fields["Architecture"] == run("dpkg", "--print-architecture").stdout.strip()
    assert int(fields["Installed-Size"]) > 0
    assert {"postinst", "prerm", "postrm", "conffiles"} <= set(run("dpkg-deb", "-I", deb).stdout.split())

    listing: dict[str, tuple[str, str]] = {}
    for line in run("dpkg-deb", "-c", deb).stdout.splitlines():
        mode, owner, *_rest = line.split()
        name = line.split(" ./", 1)[1].split(" -> ")[0].rstrip("/")
        listing["/" + name] = (mode, owner)
    expected = {
        "/opt/governor/governor": "-rwxr-xr-x",
        "/usr/bin/governor": "lrwxrwxrwx",
        "/usr/lib/systemd/user/governor.service": "-rw-r--r--",
        "/etc/xdg/autostart/governor-tray.desktop": "-rw-r--r--",
        "/etc/governor/managed.toml.example": "-rw-r--r--",
        "/etc/governor/managed.d": "drwxr-xr-x",
        "/usr/share/doc/governor/deploy.md": "-rw-r--r--",
    }
    for path, mode in expected.items():
        assert path in listing, f"{path} missing from the .deb"
        assert listing[path] == (mode, "root/root"), path
    assert not any(p.startswith("/etc/governor/managed.toml") and p.endswith(".toml") for p in listing), "never ship a live managed.toml"


def test_deb_dev_version_sorts_before_the_release(runtime: Path, tmp_path: Path) -> None:
    deb = build_deb(runtime, "0.2.0.dev3", tmp_path)
    version = run("dpkg-deb", "-f", deb, "Version").stdout.strip()
    assert version == "0.2.0~dev3"
    run("dpkg", "--compare-versions", version, "lt", "0.2.0")


def _dpkg(root: Path, *args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run(
        "dpkg", f"--root={root}", "--force-script-chrootless", "--force-depends", "--force-not-root",
        "--log=/dev/null", *args, env={**os.environ, **(env or {})},
    )


def _throwaway_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    for sub in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "etc"):
        (root / sub).mkdir(parents=True)
    for name in ("status", "available"):
        (root / "var/lib/dpkg" / name).touch()
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n")
    data = root / "home/alice/.local/share/governor"
    data.mkdir(parents=True)
    (data / "governor.db").write_text("unsent spend")
    (root / "home/alice/.config/governor").mkdir(parents=True)
    (root / "home/alice/.config/governor/config.toml").write_text('log_level = "DEBUG"\n')
    return root


def test_deb_install_upgrade_remove_purge_with_real_dpkg(runtime: Path, tmp_path: Path) -> None:
    needs("dpkg")
    old = build_deb(runtime, BUILD_VERSION, tmp_path / "old")
    new = build_deb(runtime, "0.2.0", tmp_path / "new")
    root = _throwaway_root(tmp_path)
    wants = root / "etc/systemd/user/default.target.wants/governor.service"
    user_data = root / "home/alice/.local/share/governor/governor.db"

    _dpkg(root, "-i", old)
    assert (root / "opt/governor/governor").is_file()
    assert os.readlink(root / "usr/bin/governor") == "/opt/governor/governor"
    assert os.readlink(wants) == "/usr/lib/systemd/user/governor.service", "enabled for every user (--global)"
    assert "Status: install ok installed" in _dpkg(root, "-s", "governor").stdout

    # The installed tree runs: health and one proxied call through the gateway.
    expect = ["--version", BUILD_VERSION] if PYINSTALLER else []
    out = run(sys.executable, INSTALLERS / "selftest.py", root / "opt/governor/governor", *expect)
    assert "selftest: ok" in out.stdout

    # IT's managed settings survive upgrade and plain remove.
    (root / "etc/governor/managed.toml").write_text('control_plane_url = "https://cp.example.com"\n')
    _dpkg(root, "-i", new)
    assert "Version: 0.2.0" in _dpkg(root, "-s", "governor").stdout
    assert wants.is_symlink() and user_data.read_text() == "unsent spend"

    _dpkg(root, "-r", "governor")
    assert not (root / "opt/governor").exists() and not wants.is_symlink()
    assert (root / "etc/governor/managed.toml").exists() and user_data.exists()

    _dpkg(root, "-P", "governor")
    assert not (root / "etc/governor/managed.toml.example").exists()
    assert (root / "etc/governor/managed.toml").exists(), "IT's file is not the package's to delete"
    assert user_data.exists(), "purge keeps user data unless asked"


def test_deb_purge_removes_user_data_only_when_asked(runtime: Path, tmp_path: Path) -> None:
    needs("dpkg")
    root = _throwaway_root(tmp_path)
    _dpkg(root, "-i", build_deb(runtime, BUILD_VERSION, tmp_path))
    out = _dpkg(root, "-P", "governor", env={"GOVERNOR_PURGE_USER_DATA": "1"})
    assert "removed /home/alice/.local/share/governor" in out.stdout
    assert not (root / "home/alice/.local/share/governor").exists()
    assert not (root / "home/alice/.config/governor").exists()
    assert not (root / "etc/governor").exists()


def test_systemd_unit_and_autostart_entry(tmp_path: Path) -> None:
    unit = (INSTALLERS / "linux" / "governor.service").read_text()
    assert "ExecStart=/opt/governor/governor run" in unit and "WantedBy=default.target" in unit
    assert "Restart=on-failure" in unit
    desktop = INSTALLERS / "linux" / "governor-tray.desktop"
    assert "Exec=/opt/governor/governor tray" in desktop.read_text()
    if shutil.which("desktop-file-validate"):
        run("desktop-file-validate", desktop)
    if shutil.which("systemd-analyze"):
        runtime_dir = tmp_path / "xdg-runtime"
        runtime_dir.mkdir(mode=0o700)
        result = subprocess.run(["systemd-analyze", "verify", "--user", str(INSTALLERS / "linux/governor.service")],
                                capture_output=True, text=True, timeout=60,
                                env={**os.environ, "XDG_RUNTIME_DIR": str(runtime_dir)})
        # On a build machine /opt/governor is absent: that is the only complaint allowed.
        problems = [line for line in result.stderr.splitlines() if line.strip() and "/opt/governor/governor" not in line]
        assert not problems, result.stderr


# ---------------------------------------------------------------- Linux .rpm


def test_rpm_contents(runtime: Path, tmp_path: Path) -> None:
    needs("rpmbuild")
    rpm = run(INSTALLERS / "linux" / "build-rpm.sh", runtime, BUILD_VERSION, tmp_path).stdout.split()[-1]
    files = set(run("rpm", "-qpl", rpm).stdout.split())
    assert {"/opt/governor/governor", "/usr/bin/governor", "/usr/lib/systemd/user/governor.service",
            "/etc/xdg/autostart/governor-tray.desktop", "/etc/governor/managed.toml.example"} <= files
    scripts = run("rpm", "-qp", "--scripts", rpm).stdout
    assert "systemctl --global enable governor.service" in scripts
    assert "systemctl --global disable governor.service" in scripts


# ---------------------------------------------------------------- Windows .msi


def _msi_table(msi: Path, table: str) -> list[list[str]]:
    rows = run("msiinfo", "export", msi, table).stdout.splitlines()[3:]  # names, types, table key
    return [row.split("\t") for row in rows]


def test_msi_built_with_wixl_has_the_expected_tables(tmp_path: Path) -> None:
    needs("wixl")
    needs("msiinfo")
    fake = tmp_path / "win" / "governor"
    (fake / "_internal" / "mitmproxy").mkdir(parents=True)
    for name in ("governor.exe", "governorw.exe", "_internal/python312.dll", "_internal/mitmproxy/__init__.pyc"):
        (fake / name).write_bytes(b"MZ stand-in " + name.encode())
    msi = Path(run(INSTALLERS / "windows" / "build-msi.sh", fake, "0.3.0.dev1", tmp_path / "out").stdout.split()[-1])
    assert msi.name == "governor-0.3.0.dev1-x64.msi"

    assert "Template: x64;1033" in run("msiinfo", "suminfo", msi).stdout
    props = dict(row[:2] for row in _msi_table(msi, "Property"))
    assert props["ProductVersion"] == "0.3.0"
    assert props["UpgradeCode"] == "{6B1F3C2E-8D4A-4E59-9C1B-2A7E5D0F4C31}"
    assert props.get("ALLUSERS") == "1", "per-machine"

    files = {row[2] for row in _msi_table(msi, "File")}
    assert {"governor.exe", "governorw.exe", "python312.dll", "__init__.pyc"} <= files
    registry = {(row[2], row[3]): row[4] for row in _msi_table(msi, "Registry")}
    run_key = "Software\\Microsoft\\Windows\\CurrentVersion\\Run\\"
    assert registry[(run_key, "GovernorAgent")] == '"[INSTALLDIR]governorw.exe" run'
    assert registry[(run_key, "GovernorTray")] == '"[INSTALLDIR]governorw.exe" tray'
    assert registry[("SOFTWARE\\Governor\\Governor\\", "Version")] == "0.3.0"

    actions = {row[0]: row for row in _msi_table(msi, "CustomAction")}
    assert "control_plane_url" in actions["PolicyControlPlane"][3] and managed.POLICY_KEY in actions["PolicyControlPlane"][3]
    assert actions["StopGovernor"][3] == "/F /T /IM governorw.exe"
    sequence = {row[0]: (row[1], int(row[2])) for row in _msi_table(msi, "InstallExecuteSequence")}
    initialize, finalize = sequence["InstallInitialize"][1], sequence["InstallFinalize"][1]
    for deferred in ("StopGovernor", "PolicyControlPlane", "PolicyEnrollment"):
        assert initialize < sequence[deferred][1] < finalize, f"{deferred} must run inside the install script"
    assert sequence["StopGovernor"][1] < sequence["RemoveFiles"][1]
    assert sequence["RemoveExistingProducts"][1] < initialize, "upgrade removes the old version first"
    upgrade = _msi_table(msi, "Upgrade")
    assert any(row[0] == "{6B1F3C2E-8D4A-4E59-9C1B-2A7E5D0F4C31}" for row in upgrade)

    extracted = tmp_path / "x"
    run("msiextract", "-C", extracted, msi)
    assert (extracted / "Governor" / "governorw.exe").read_bytes() == (fake / "governorw.exe").read_bytes()


def test_admx_and_adml_define_every_managed_key() -> None:
    ns = {"p": "http://schemas.microsoft.com/GroupPolicy/2006/07/PolicyDefinitions"}
    admx = ET.parse(INSTALLERS / "windows/admx/Governor.admx").getroot()
    adml = ET.parse(INSTALLERS / "windows/admx/en-US/Governor.adml").getroot()
    strings = {s.get("id") for s in adml.iterfind(".//p:string", ns)}
    presentations = {p.get("id") for p in adml.iterfind(".//p:presentation", ns)}
    policies = admx.findall(".//p:policy", ns)
    assert {p.get("name") for p in policies} == managed.MANAGED_KEYS
    for policy in policies:
        name = policy.get("name")
        assert policy.get("key") == managed.POLICY_KEY and policy.get("class") == "Both"
        assert name in strings and f"{name}_Explain" in strings
        elements = policy.find("p:elements", ns)
        if elements is None:  # boolean: the policy's own value
            assert policy.get("valueName") == name
        else:
            assert [e.get("valueName") for e in elements] == [name]
            assert policy.get("presentation") == f"$(presentation.{name})" and name in presentations


def test_intune_scripts_agree_with_the_msi() -> None:
    wxs = (INSTALLERS / "windows/governor.wxs").read_text()
    install = (INSTALLERS / "windows/intune/install.ps1").read_text()
    detect = (INSTALLERS / "windows/intune/detect.ps1").read_text()
    uninstall = (INSTALLERS / "windows/intune/uninstall.ps1").read_text()
    assert "6B1F3C2E-8D4A-4E59-9C1B-2A7E5D0F4C31" in wxs and "6B1F3C2E-8D4A-4E59-9C1B-2A7E5D0F4C31" in uninstall
    assert "CONTROL_PLANE_URL" in install and "ENROLLMENT_ORG" in install and "/qn" in install
    assert 'HKLM:\\SOFTWARE\\Governor\\Governor' in detect and "governor.exe" in detect
    assert "/qn" in uninstall and "Stop-Process" in uninstall


# ---------------------------------------------------------------- macOS


@pytest.mark.parametrize("label, command", [("ai.governor.agent", "run"), ("ai.governor.tray", "tray")])
def test_launch_agents(label: str, command: str) -> None:
    plist = plistlib.loads((INSTALLERS / "macos" / f"{label}.plist").read_bytes())
    assert plist["Label"] == label
    assert plist["ProgramArguments"] == ["/Applications/Governor.app/Contents/MacOS/governor", command]
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] in (True, {"SuccessfulExit": False})
    assert 5 <= plist["ThrottleInterval"] <= 60
    assert plist["LimitLoadToSessionType"] == ["Aqua"]


def test_pkg_build_inputs() -> None:
    component = plistlib.loads((INSTALLERS / "macos/component.plist").read_bytes())
    assert component == [
        {
            "RootRelativeBundlePath": "Applications/Governor.app",
            "BundleIsRelocatable": False,
            "BundleIsVersionChecked": False,
            "BundleHasStrictIdentifier": True,
            "BundleOverwriteAction": "upgrade",
        }
    ]
    dist = ET.parse(INSTALLERS / "macos/distribution.xml").getroot()
    assert dist.tag == "installer-gui-script"
    assert dist.find("pkg-ref[@version]").text == "governor-component.pkg"  # type: ignore[union-attr]
    postinstall = (INSTALLERS / "macos/scripts/postinstall").read_text()
    assert 'launchctl bootstrap "gui/$uid"' in postinstall
    for label in ("ai.governor.agent", "ai.governor.tray"):
        assert label in postinstall and label in (INSTALLERS / "macos/uninstall.sh").read_text()


def test_mobileconfig_is_a_valid_profile() -> None:
    profile = plistlib.loads((INSTALLERS / "macos/governor.mobileconfig").read_bytes())
    assert profile["PayloadType"] == "Configuration" and profile["PayloadScope"] == "System"
    uuids = {profile["PayloadUUID"], *(p["PayloadUUID"] for p in profile["PayloadContent"])}
    assert len(uuids) == 2
    (payload,) = profile["PayloadContent"]
    assert payload["PayloadType"] == managed.BUNDLE_ID


# ---------------------------------------------------------------- every script


SCRIPTS = {
    "sh": ["linux/debian/postinst", "linux/debian/prerm", "linux/debian/postrm", "macos/scripts/preinstall",
           "macos/scripts/postinstall", "macos/uninstall.sh"],
    "bash": ["build.sh", "linux/build-deb.sh", "linux/build-rpm.sh", "macos/build-pkg.sh", "windows/build-msi.sh"],
}


@pytest.mark.parametrize("shell, script", [(s, p) for s, paths in SCRIPTS.items() for p in paths])
def test_scripts_parse_and_pass_shellcheck(shell: str, script: str) -> None:
    path = INSTALLERS / script
    assert os.access(path, os.X_OK), f"{script} must be executable"
    run(shell, "-n", path)
    if shutil.which("shellcheck"):
        run("shellcheck", "-s", shell, path)
