#!/usr/bin/env bash
# Install what the tests need, then run the whole test suite: `./test.sh [cargo test args]`.
# The tests use real components: docker-registry (CNCF distribution), skopeo, podman, runc,
# containerd, busybox-static (test images), jq, htpasswd, nginx, Apache httpd, Caddy and rsync (mirrors),
# chromium and chromedriver (the admin UI in a real browser); gpg and openssl (signing images as
# their publishers do); aiosmtpd (mail); rpm (rpmbuild) and systemd
# (systemd-analyze) for packaging/check-rpm.sh, which .ci/run runs after the tests.
set -euo pipefail
cd "$(dirname "$0")"

tools=(docker-registry skopeo podman runc containerd ctr busybox jq htpasswd nginx apache2 caddy rsync chromium chromedriver gpg gpgconf openssl rpmbuild systemd-analyze pgrep)
missing=()
for t in "${tools[@]}"; do
  command -v "$t" >/dev/null 2>&1 || [ -x "/usr/sbin/$t" ] || missing+=("$t")
done
# aiosmtpd (a real SMTP server for the notice tests) is a module of the system Python.
/usr/bin/python3 -c 'import aiosmtpd' >/dev/null 2>&1 || missing+=(aiosmtpd)
# Fedora's docker-distribution names the registry `registry`.
if [[ " ${missing[*]} " == *" docker-registry "* ]] && command -v registry >/dev/null 2>&1; then
  missing=("${missing[@]/docker-registry}")
fi
# Fedora's Apache httpd is `httpd`.
if [[ " ${missing[*]} " == *" apache2 "* ]] && [ -x /usr/sbin/httpd ]; then
  missing=("${missing[@]/apache2}")
fi

if [ -n "${missing[*]// /}" ]; then
  echo "test.sh: installing test dependencies (missing: ${missing[*]})" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if command -v apt-get >/dev/null 2>&1; then
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
      docker-registry skopeo podman runc containerd busybox-static jq apache2-utils \
      nginx apache2 caddy rsync uidmap ca-certificates chromium chromium-driver gnupg openssl rpm systemd \
      procps python3-aiosmtpd >/dev/null
  elif command -v dnf >/dev/null 2>&1; then
    $sudo dnf install -y -q docker-distribution skopeo podman runc containerd busybox jq httpd-tools httpd caddy nginx rsync chromium chromedriver gnupg2 openssl rpm-build systemd procps-ng python3-aiosmtpd
  else
    echo "test.sh: install these and run again: ${missing[*]}" >&2
    exit 1
  fi
fi

# Every server the tests start is stopped by them: none may outlive the suite (an nginx
# killed with SIGKILL leaves its workers behind, still holding their ports).
servers='^(nginx|apache2|httpd|caddy|docker-registry|registry|containerd|chromedriver)$'
# Zombies (state Z) are dead already: only live processes count.
count() { ps -eo stat=,comm= | awk -v re="$servers" '$1 !~ /^Z/ && $2 ~ re' | wc -l; }
before=$(count)
cargo test "$@"
after=$(count)
if [ "${after:-0}" -gt "${before:-0}" ]; then
  echo "test.sh: servers started by the tests outlived them:" >&2
  ps -eo pid=,stat=,args= | grep -E "nginx|apache2|httpd|caddy|registry|containerd|chromedriver" | grep -v grep >&2 || true
  exit 1
fi
