#!/usr/bin/env bash
# Build governor-<version>-1.<arch>.rpm around a built runtime folder.
#   installers/linux/build-rpm.sh <runtime-dir> <version> <out-dir>
set -euo pipefail
runtime="$(cd "$1" && pwd)"
version="$(echo "$2" | tr '-' '~')"
out="$(mkdir -p "$3" && cd "$3" && pwd)"
here="$(cd "$(dirname "$0")" && pwd)"
top="$(mktemp -d)"
trap 'rm -rf "$top"' EXIT
rpmbuild -bb --quiet \
    --define "_topdir $top" --define "version $version" --define "runtime $runtime" \
    --define "srcdir $here" --define "docfile $here/../../docs/deploy.md" \
    --define "_binary_payload w6.xzdio" \
    "$here/governor-rpm.spec" >&2
find "$top/RPMS" -name '*.rpm' -exec cp {} "$out/" \; -printf "$out/%f\n"
