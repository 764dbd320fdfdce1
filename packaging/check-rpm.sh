#!/usr/bin/env bash
# Build the RPM and check it: the files it installs, its scriptlets, the unit
# (systemd-analyze verify, where available) and the packaged config (wharf check-config).
# Run by .ci/run; exits non-zero with the reason on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
rpm=$(packaging/build-rpm.sh | tail -n1)
echo "check-rpm.sh: built $rpm"
fail() { echo "check-rpm.sh: $*" >&2; exit 1; }

files=$(rpm -qlp "$rpm")
for f in /usr/bin/wharf /usr/lib/systemd/system/wharf.service /etc/wharf/wharf.toml \
  /usr/lib/sysusers.d/wharf.conf /var/lib/wharf /usr/share/doc/wharf/operators.md \
  /usr/share/doc/wharf/mirror-admins.md /usr/share/doc/wharf/signatures.md /usr/share/doc/wharf/registry-mirrors.md \
  /usr/share/licenses/wharf/LICENSE; do
  grep -qx "$f" <<<"$files" || fail "$f is not in the package: $files"
done
rpm -qp --configfiles "$rpm" | grep -qx /etc/wharf/wharf.toml || fail "wharf.toml is not %config"
scripts=$(rpm -qp --scripts "$rpm")
for s in preinstall postinstall preuninstall postuninstall; do
  grep -q "^$s scriptlet" <<<"$scripts" || fail "no $s scriptlet: $scripts"
done
grep -q useradd <<<"$scripts" || grep -q sysusers <<<"$scripts" || fail "the %pre does not create the user"

target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target="$PWD/$target" ;; esac
bin="$target/release/wharf"
"$bin" --config packaging/wharf.toml check-config || fail "the packaged config is refused"

if command -v systemd-analyze >/dev/null; then
  # Verify the unit as installed, with ExecStart pointing at the binary just built.
  dir=$(mktemp -d)
  trap 'rm -rf "$dir"' EXIT
  sed "s|/usr/bin/wharf|$bin|" packaging/wharf.service >"$dir/wharf.service"
  out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no "$dir/wharf.service" 2>&1) \
    || fail "systemd-analyze verify: $out"
  if grep -v -e 'Failed to .*cgroup' -e '^$' <<<"$out" | grep -q .; then
    fail "systemd-analyze verify warns: $out"
  fi
  echo "check-rpm.sh: systemd-analyze verify passed"
else
  echo "check-rpm.sh: systemd-analyze is not available here; unit not verified"
fi
echo "check-rpm.sh: ok"
