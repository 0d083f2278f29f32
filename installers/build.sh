#!/usr/bin/env bash
# Build the self-contained runtime (PyInstaller, one folder) and, on request,
# the packages that wrap it.
#
#   installers/build.sh [runtime|deb|rpm|msi|all]   (default: runtime)
#
# Environment:
#   GOVERNOR_BUILD_VERSION  version to stamp (default: pyproject.toml's)
#   GOVERNOR_DIST           output dir (default: <repo>/dist)
#   GOVERNOR_RUNTIME        an already built runtime folder to package instead of building one
#   GOVERNOR_BUILD_REF      build the sources of this git ref (e.g. HEAD) instead of the working tree
#
# PyInstaller is not a project dependency: it runs through `uv run --with`,
# which fetches it into uv's cache without touching pyproject.toml or uv.lock.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
dist="${GOVERNOR_DIST:-$repo/dist}"
version="${GOVERNOR_BUILD_VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/pyproject.toml" | head -n1)}"
pyinstaller_spec="${GOVERNOR_PYINSTALLER:-pyinstaller>=6.10,<7}"
src="$repo"
if [[ -n "${GOVERNOR_BUILD_REF:-}" ]]; then
    src="$(mktemp -d)"
    trap 'rm -rf "$src"' EXIT
    git -C "$repo" archive "$GOVERNOR_BUILD_REF" pyproject.toml agent addons tray | tar -x -C "$src"
fi
export GOVERNOR_BUILD_VERSION="$version" GOVERNOR_SRC="$src"
# uv: the one running us (`uv run` exports UV), else on PATH, else python3 -m uv.
if [[ -n "${UV:-}" && -x "${UV:-}" ]]; then
    uv=("$UV")
elif command -v uv >/dev/null; then
    uv=(uv)
else
    uv=(python3 -m uv)
fi

build_runtime() {
    local work="$dist/.pyinstaller-work"
    mkdir -p "$dist"
    echo "build.sh: PyInstaller runtime $version -> $dist/governor" >&2
    (cd "$repo" && "${uv[@]}" run --frozen --with "$pyinstaller_spec" \
        pyinstaller --noconfirm --clean --log-level WARN \
        --distpath "$dist" --workpath "$work" "$here/pyinstaller/governor.spec")
    "$dist/governor/governor" --version
}

runtime_dir() {
    if [[ -n "${GOVERNOR_RUNTIME:-}" ]]; then
        echo "$GOVERNOR_RUNTIME"
        return
    fi
    [[ -x "$dist/governor/governor" ]] || build_runtime >&2
    echo "$dist/governor"
}

case "${1:-runtime}" in
    runtime) build_runtime ;;
    deb) "$here/linux/build-deb.sh" "$(runtime_dir)" "$version" "$dist" ;;
    rpm) "$here/linux/build-rpm.sh" "$(runtime_dir)" "$version" "$dist" ;;
    msi) "$here/windows/build-msi.sh" "${GOVERNOR_WIN_RUNTIME:?set GOVERNOR_WIN_RUNTIME to the Windows runtime folder (PyInstaller output built on Windows)}" "$version" "$dist" ;;
    all)
        build_runtime
        "$here/linux/build-deb.sh" "$dist/governor" "$version" "$dist"
        if command -v rpmbuild >/dev/null; then "$here/linux/build-rpm.sh" "$dist/governor" "$version" "$dist"; fi
        if [[ -n "${GOVERNOR_WIN_RUNTIME:-}" ]]; then "$here/windows/build-msi.sh" "$GOVERNOR_WIN_RUNTIME" "$version" "$dist"; fi
        ;;
    *)
        echo "usage: installers/build.sh [runtime|deb|rpm|msi|all]" >&2
        exit 2
        ;;
esac
