#!/bin/bash
# Build Governor-<version>.pkg on a Mac (pkgbuild and productbuild are macOS
# tools; nothing here runs on Linux).
#
#   installers/macos/build-pkg.sh <Governor.app> <version> <out-dir>
#
# <Governor.app> is PyInstaller's output on macOS (installers/build.sh runtime
# builds dist/Governor.app there). Optional signing and notarization:
#   GOVERNOR_MAC_APP_IDENTITY        "Developer ID Application: …" (codesign the app)
#   GOVERNOR_MAC_INSTALLER_IDENTITY  "Developer ID Installer: …"   (productbuild --sign)
#   GOVERNOR_NOTARY_PROFILE          a `xcrun notarytool store-credentials` profile
set -euo pipefail

app="$(cd "$1" && pwd)"
version="$2"
out="$(mkdir -p "$3" && cd "$3" && pwd)"
here="$(cd "$(dirname "$0")" && pwd)"
for tool in pkgbuild productbuild; do
    command -v "$tool" >/dev/null || { echo "build-pkg.sh: $tool not found: run this on macOS" >&2; exit 2; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root/Applications" "$root/Library/LaunchAgents"
ditto "$app" "$root/Applications/Governor.app"
install -m 0644 "$here/ai.governor.agent.plist" "$here/ai.governor.tray.plist" "$root/Library/LaunchAgents/"
plutil -lint "$root/Library/LaunchAgents/"*.plist

if [[ -n "${GOVERNOR_MAC_APP_IDENTITY:-}" ]]; then
    codesign --force --deep --options runtime --timestamp --sign "$GOVERNOR_MAC_APP_IDENTITY" \
        "$root/Applications/Governor.app"
fi

pkgbuild --root "$root" --install-location / --ownership recommended \
    --component-plist "$here/component.plist" --scripts "$here/scripts" \
    --identifier ai.governor.agent.pkg --version "$version" \
    "$work/governor-component.pkg"

sed "s/__VERSION__/$version/" "$here/distribution.xml" >"$work/distribution.xml"
pkg="$out/Governor-$version.pkg"
sign=()
[[ -n "${GOVERNOR_MAC_INSTALLER_IDENTITY:-}" ]] && sign=(--sign "$GOVERNOR_MAC_INSTALLER_IDENTITY")
productbuild --distribution "$work/distribution.xml" --package-path "$work" ${sign[@]+"${sign[@]}"} "$pkg"

if [[ -n "${GOVERNOR_NOTARY_PROFILE:-}" ]]; then
    xcrun notarytool submit "$pkg" --keychain-profile "$GOVERNOR_NOTARY_PROFILE" --wait
    xcrun stapler staple "$pkg"
fi
echo "$pkg"
