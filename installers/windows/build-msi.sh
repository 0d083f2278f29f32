#!/usr/bin/env bash
# Build governor-<version>-x64.msi with wixl (apt: wixl, msitools) around the
# Windows runtime folder (PyInstaller's one-folder output built on Windows:
# governor.exe, governorw.exe, _internal/). Runs on Linux or Windows (WSL).
#
#   installers/windows/build-msi.sh <runtime-dir> <version> <out-dir>
set -euo pipefail

runtime="$(cd "$1" && pwd)"
version="$2"
out="$(mkdir -p "$3" && cd "$3" && pwd)"
here="$(cd "$(dirname "$0")" && pwd)"
command -v wixl >/dev/null || { echo "build-msi.sh: wixl not found (apt-get install wixl msitools)" >&2; exit 2; }
for exe in governor.exe governorw.exe; do
    [[ -f "$runtime/$exe" ]] || { echo "build-msi.sh: $runtime/$exe missing (build the runtime on Windows)" >&2; exit 2; }
done
# MSI versions are numeric (major.minor.build): 0.2.0.dev1 -> 0.2.0.
msi_version="$(echo "$version" | grep -oE '^[0-9]+(\.[0-9]+){0,2}')"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
ln -s "$runtime" "$work/runtime"
python3 "$here/wxs_runtime.py" "$work/runtime" >"$work/runtime.wxs"
msi="$out/governor-$version-x64.msi"
# wixl resolves File/@Source relative to the working directory.
(cd "$work" && wixl -a x64 -D Version="$msi_version" -o "$msi" "$here/governor.wxs" runtime.wxs)
echo "$msi"
