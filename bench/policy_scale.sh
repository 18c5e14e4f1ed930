#!/usr/bin/env bash
# Policy scale: the agent's bank write time at start and at a reload, and its RSS with the
# example policy and with synthetic policies of 10 to 100,000 rules (bench/gen_policy.py),
# printed as a table (not a test). Attaches only to its own cgroup under the cgroup v2 mount.
#
# usage (root): bench/policy_scale.sh   (build first: scripts/build.sh)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${MSEG_BUILD_DIR:-$root/build}
cgroot=$(awk '$3 == "cgroup2" {print $2; exit}' /proc/mounts)
cg=$cgroot/microseg-bench-scale
work=$(mktemp -d /tmp/mseg-scale.XXXXXX)
pin=/sys/fs/bpf/mseg-bench-scale
agent_pid=""

cleanup() {
  [[ -n $agent_pid ]] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null || true
  "$build/agent/microsegctl" uninstall --pin-dir "$pin" >/dev/null 2>&1 || true
  rmdir "$cg/client.service" "$cg/server.service" "$cg" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$cg/client.service" "$cg/server.service"

# apply_ms LOG N: the took_ms of the Nth "policy applied" line.
apply_ms() { grep "policy applied" "$1" | sed -n "${2}p" | sed 's/.*took_ms=\([0-9.]*\).*/\1/'; }

measure() {
  local name=$1 policy=$2
  rm -rf "$work/state"
  "$build/agent/microsegctl" uninstall --pin-dir "$pin" >/dev/null 2>&1 || true
  "$build/agent/microsegd" --policy "$policy" --cgroup "$cg" --pin-dir "$pin" \
    --state-dir "$work/state" --stats-interval 0 >"$work/agent.log" 2>&1 &
  agent_pid=$!
  for _ in $(seq 600); do [[ -f $work/state/status.json ]] && break; sleep 0.1; done
  local rss
  rss=$(awk '/^VmRSS/ {print int($2 / 1024)}' "/proc/$agent_pid/status")
  kill -HUP "$agent_pid"
  for _ in $(seq 600); do [[ $(grep -c "policy applied" "$work/agent.log") -ge 2 ]] && break; sleep 0.1; done
  printf '%-22s %10s %14s %14s %10s\n' "$name" \
    "$(grep -o 'rules=[0-9]*' "$work/agent.log" | head -1 | cut -d= -f2)" \
    "$(apply_ms "$work/agent.log" 1)" "$(apply_ms "$work/agent.log" 2)" "$rss"
  kill "$agent_pid"
  wait "$agent_pid" 2>/dev/null || true
  agent_pid=""
}

printf '\nmicroseg policy scale (%s cores)\n\n' "$(nproc)"
printf '%-22s %10s %14s %14s %10s\n' policy rules "start ms" "reload ms" "RSS MiB"
measure examples/erp-crm.yaml "$root/examples/erp-crm.yaml"
for rules in 10 1000 10000 100000; do
  "$root/bench/gen_policy.py" "$rules" >"$work/policy-$rules.yaml"
  measure "synthetic $rules" "$work/policy-$rules.yaml"
done
echo
echo "start ms: building the bank and writing it into the kernel at start (after parsing and"
echo "compiling the file); reload ms: the same after SIGHUP with the file unchanged, which fills"
echo "the other, still empty bank. Both from the agent's 'policy applied' line."
