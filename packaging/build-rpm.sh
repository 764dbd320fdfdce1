#!/usr/bin/env bash
# Build the release binary and the binary RPM: `packaging/build-rpm.sh`.
# Output: target/rpm/RPMS/<arch>/wharf-<version>-1.<arch>.rpm (path printed last).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v rpmbuild >/dev/null || {
  echo "build-rpm.sh: rpmbuild is missing: apt-get install rpm (Debian) or dnf install rpm-build" >&2
  exit 1
}
cargo build --release --locked
version=$(cargo metadata --no-deps --format-version 1 | jq -r '.packages[] | select(.name=="wharf") | .version')
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target="$PWD/$target" ;; esac
top="$target/rpm"
rm -rf "$top"
mkdir -p "$top/SOURCES"
cp "$target/release/wharf" packaging/wharf.service packaging/wharf.toml packaging/wharf.sysusers \
  README.md docs/operators.md docs/mirror-admins.md docs/signatures.md docs/registry-mirrors.md LICENSE "$top/SOURCES/"
rpmbuild -bb --quiet \
  --define "_topdir $top" \
  --define "wharf_version $version" \
  packaging/wharf.spec >&2
find "$top/RPMS" -name 'wharf-*.rpm' -print
