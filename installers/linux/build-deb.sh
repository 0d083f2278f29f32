#!/usr/bin/env bash
# Build governor_<version>_<arch>.deb around a built runtime folder.
#
#   installers/linux/build-deb.sh <runtime-dir> <version> <out-dir>
#
# <runtime-dir> is PyInstaller's one-folder output (dist/governor, holding the
# `governor` executable). Layout of the package:
#   /opt/governor/                              the runtime
#   /usr/bin/governor -> /opt/governor/governor
#   /usr/lib/systemd/user/governor.service      enabled for every user (postinst)
#   /etc/xdg/autostart/governor-tray.desktop    the tray, at each graphical login
#   /etc/governor/managed.toml.example, managed.d/   managed settings (docs/deploy.md)
#   /usr/share/doc/governor/                    deploy guide, copyright
# Needs dpkg-deb only (no root, no fakeroot: --root-owner-group).
# GOVERNOR_DEB_COMPRESSION: xz (default, every dpkg reads it), zstd, gzip, none.
set -euo pipefail

runtime="$(cd "$1" && pwd)"
version="$2"
out="$(mkdir -p "$3" && cd "$3" && pwd)"
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
[[ -x "$runtime/governor" ]] || { echo "build-deb.sh: no executable $runtime/governor" >&2; exit 2; }

arch="$(dpkg --print-architecture 2>/dev/null || echo amd64)"
# Debian sorts "~" before anything: 0.2.0.dev1 -> 0.2.0~dev1 (older than 0.2.0).
deb_version="$(echo "$version" | sed -E 's/[.-]?(dev|a|b|rc)([0-9]*)$/~\1\2/')"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
root="$stage/root"

install -d -m 0755 "$root/opt" "$root/usr/bin" "$root/usr/lib/systemd/user" "$root/etc/xdg/autostart" \
    "$root/etc/governor/managed.d" "$root/usr/share/doc/governor" "$root/DEBIAN"
cp -a "$runtime" "$root/opt/governor"
chmod -R u+rwX,go+rX,go-w "$root/opt/governor"
ln -s /opt/governor/governor "$root/usr/bin/governor"
install -m 0644 "$here/governor.service" "$root/usr/lib/systemd/user/governor.service"
install -m 0644 "$here/governor-tray.desktop" "$root/etc/xdg/autostart/governor-tray.desktop"
install -m 0644 "$here/managed.toml.example" "$root/etc/governor/managed.toml.example"
install -m 0644 "$repo/docs/deploy.md" "$root/usr/share/doc/governor/deploy.md"
printf 'Governor %s\nSee /usr/share/doc/governor/deploy.md.\n' "$version" >"$root/usr/share/doc/governor/copyright"
chmod 0644 "$root/usr/share/doc/governor/copyright"

for script in postinst prerm postrm; do
    install -m 0755 "$here/debian/$script" "$root/DEBIAN/$script"
done
printf '/etc/governor/managed.toml.example\n/etc/xdg/autostart/governor-tray.desktop\n' >"$root/DEBIAN/conffiles"
installed_kib="$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
cat >"$root/DEBIAN/control" <<CONTROL
Package: governor
Version: $deb_version
Architecture: $arch
Maintainer: Governor maintainers <governor@localhost>
Installed-Size: $installed_kib
Depends: libc6 (>= 2.31)
Recommends: systemd
Section: net
Priority: optional
Homepage: https://github.com/governor-ai/governor
Description: local LLM gateway that governs coding CLIs' model traffic
 Governor runs a gateway on 127.0.0.1 for Claude Code, Codex CLI, Gemini CLI,
 opencode, Aider and Cursor, applying the organisation's policy and budgets
 before a request leaves the laptop. Self-contained (no Python needed): the
 agent starts for every user as a systemd user service, the tray at login.
CONTROL

deb="$out/governor_${deb_version}_${arch}.deb"
dpkg-deb --root-owner-group -Z"${GOVERNOR_DEB_COMPRESSION:-xz}" --build "$root" "$deb" >/dev/null
echo "$deb"
