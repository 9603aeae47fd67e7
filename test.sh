#!/usr/bin/env bash
# Runs every test of the project, after installing what the tests need.
#
# For a Debian 12 machine that has the Rust toolchain and nothing else, run
# as root: the network-namespace tests create namespaces, and the packages
# below come from apt. Every prerequisite is then required: a test that
# finds one missing fails instead of skipping (IPAM_TEST_REQUIRE_ALL=1).
# Without root, `cargo test` runs the tiers that need none of this and
# names the tests it skips.
#
# Arguments go to cargo nextest (`./test.sh -p ipam-core`, say).
set -euo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" -ne 0 ]; then
  echo "test.sh: run as root (network-namespace tests and apt-get need it);" \
    "without root, \`cargo test\` runs the tests that need neither" >&2
  exit 2
fi

# Each package, and the tests that need it:
apt_packages=(
  # a real etcd for the etcd backend (testkit::etcd)
  etcd-server
  # headless Chromium for the usage page (ipam-server/tests/page.rs)
  chromium
  # Debian's bridge, ptp and host-local CNI plugins, run beside calico-ipam
  # (ipam-cni/tests/netns.rs; host-local is also the benchmark's peer)
  containernetworking-plugins
  # `ip netns` and `ip addr` for those tests
  iproute2
  # a real container runtime on a bridge + calico-ipam network
  # (ipam-cni/tests/podman.rs); podman 4.3 pulls in conmon and
  # containers-common
  podman
  # the OCI runtime that podman test uses: crun refuses the hybrid cgroup
  # layout of these machines
  runc
  # the podman test's image: a static busybox and its links, imported
  # with `podman import` (there is no image registry)
  busybox-static
  # promtool lints /metrics in both exposition formats
  # (ipam-server/tests/metrics.rs); its daemon is kept from starting below
  prometheus
  # a virtualenv for the OpenAPI tests' pinned schemathesis and
  # openapi-spec-validator from PyPI (ipam-server/tests/schemathesis.rs)
  python3-venv
)
missing=()
for package in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' \
    || missing+=("$package")
done
if ((${#missing[@]})); then
  apt-get update
  # No package starts a service meanwhile (prometheus and etcd-server would
  # leave daemons running): invoke-rc.d asks policy-rc.d, 101 is "not now".
  policy_added=false
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    policy_added=true
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  if $policy_added; then
    rm -f /usr/sbin/policy-rc.d
  fi
fi
# An etcd-server installed before this script may run a system etcd on
# 127.0.0.1:2379; the tests start their own on free ports and never use it.

nextest_version=0.9.143
if ! cargo nextest --version 2>/dev/null | grep -q "^cargo-nextest $nextest_version"; then
  cargo install --locked cargo-nextest --version "$nextest_version"
fi

export IPAM_TEST_REQUIRE_ALL=1
exec cargo nextest run --workspace --locked --profile ci "$@"
