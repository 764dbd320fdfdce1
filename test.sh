#!/usr/bin/env bash
# Install what the tests need, then run the whole test suite: `./test.sh [cargo test args]`.
# The tests use real components: docker-registry (CNCF distribution), skopeo, podman, runc,
# containerd, busybox-static (test images), jq, htpasswd, nginx and rsync (mirrors),
# chromium and chromedriver (the admin UI in a real browser); rpm (rpmbuild) and systemd
# (systemd-analyze) for packaging/check-rpm.sh, which .ci/run runs after the tests.
set -euo pipefail
cd "$(dirname "$0")"

tools=(docker-registry skopeo podman runc containerd ctr busybox jq htpasswd nginx rsync chromium chromedriver rpmbuild systemd-analyze)
missing=()
for t in "${tools[@]}"; do
  command -v "$t" >/dev/null 2>&1 || [ -x "/usr/sbin/$t" ] || missing+=("$t")
done
# Fedora's docker-distribution names the registry `registry`.
if [[ " ${missing[*]} " == *" docker-registry "* ]] && command -v registry >/dev/null 2>&1; then
  missing=("${missing[@]/docker-registry}")
fi

if [ -n "${missing[*]// /}" ]; then
  echo "test.sh: installing test dependencies (missing: ${missing[*]})" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if command -v apt-get >/dev/null 2>&1; then
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
      docker-registry skopeo podman runc containerd busybox-static jq apache2-utils \
      nginx rsync uidmap ca-certificates chromium chromium-driver rpm systemd >/dev/null
  elif command -v dnf >/dev/null 2>&1; then
    $sudo dnf install -y -q docker-distribution skopeo podman runc containerd busybox jq httpd-tools nginx rsync chromium chromedriver rpm-build systemd
  else
    echo "test.sh: install these and run again: ${missing[*]}" >&2
    exit 1
  fi
fi

exec cargo test "$@"
