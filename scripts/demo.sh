#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine, builds microseg, and runs the lab: a real PostgreSQL and a
# real nginx in network namespaces, with microsegd enforcing examples/erp-crm.yaml on the lab's
# own cgroup. Prints every check's verdict and the per-rule counters, then removes the lab.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [[ $EUID -ne 0 ]]; then
  echo "run as root: the lab creates network namespaces and loads eBPF programs" >&2
  exit 1
fi
"$root/scripts/install-deps.sh"
echo "building microseg (the first build takes several minutes; log: /tmp/microseg-build.log)"
"$root/scripts/build.sh" >/tmp/microseg-build.log 2>&1 ||
  { tail -n 30 /tmp/microseg-build.log; exit 1; }
exec "$root/scripts/lab.sh" demo
