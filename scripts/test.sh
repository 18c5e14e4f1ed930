#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine, builds, and runs every test suite: unit (no root), bpf and
# integration (root: real cgroups, network namespaces and traffic, all cleaned up afterwards).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [[ $EUID -ne 0 ]]; then
  echo "run as root: the bpf and integration suites load eBPF programs" >&2
  exit 1
fi
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh"
cd "${MSEG_BUILD_DIR:-$root/build}"
# One test at a time: the privileged suites share the machine's cgroup tree and bpffs.
ctest --output-on-failure --timeout 600 "$@"
