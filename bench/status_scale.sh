#!/usr/bin/env bash
# Status scale: how long `microsegctl status` (the agent reads every rule's counter and name
# from the pinned maps) and `microsegctl counters` (microsegctl reads them itself) take with a
# policy of 10 to 100,000 rules (bench/gen_policy.py). The best and the median of five runs of
# each, wall clock, in ms. Prints a table, not a test. Attaches only to its own cgroup under the
# cgroup v2 mount.
#
# usage (root): bench/status_scale.sh [RULES...]   (default: 1000 10000 100000;
#                                                   build first: scripts/build.sh)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${MSEG_BUILD_DIR:-$root/build}
cgroot=$(awk '$3 == "cgroup2" {print $2; exit}' /proc/mounts)
cg=$cgroot/microseg-bench-status
work=$(mktemp -d /tmp/mseg-status.XXXXXX)
pin=/sys/fs/bpf/mseg-bench-status
agent_pid=""
sizes=("$@")
[[ ${#sizes[@]} -gt 0 ]] || sizes=(1000 10000 100000)
runs=5

cleanup() {
  if [[ -n $agent_pid ]]; then
    kill "$agent_pid" 2>/dev/null || true
    wait "$agent_pid" 2>/dev/null || true
  fi
  "$build/agent/microsegctl" uninstall --pin-dir "$pin" >/dev/null 2>&1 || true
  rmdir "$cg/client.service" "$cg/server.service" "$cg" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$cg/client.service" "$cg/server.service"

wait_ready() {
  for _ in $(seq 1200); do
    "$build/agent/microsegctl" status --socket "$work/control.sock" >/dev/null 2>&1 && return 0
    kill -0 "$agent_pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "the agent did not start; its log:" >&2
  cat "$work/agent.log" >&2
  exit 1
}

# best and median wall-clock ms of `runs` runs of the command
time_ms() {
  local samples=()
  for _ in $(seq "$runs"); do
    local start end
    start=$(date +%s%N)
    "$@" >/dev/null
    end=$(date +%s%N)
    samples+=($(((end - start) / 1000000)))
  done
  printf '%s\n' "${samples[@]}" | sort -n |
    awk '{a[NR]=$1} END {printf "%d %d", a[1], a[int((NR+1)/2)]}'
}

measure() {
  local rules=$1
  "$root/bench/gen_policy.py" "$rules" >"$work/policy.yaml"
  rm -rf "$work/state"
  "$build/agent/microsegd" --policy "$work/policy.yaml" --cgroup "$cg" --pin-dir "$pin" \
    --state-dir "$work/state" --stats-interval 0 --control-socket "$work/control.sock" \
    >"$work/agent.log" 2>&1 &
  agent_pid=$!
  wait_ready
  # shellcheck disable=SC2046
  printf '%8s %12s %12s %12s %12s\n' "$rules" \
    $(time_ms "$build/agent/microsegctl" status --socket "$work/control.sock") \
    $(time_ms "$build/agent/microsegctl" counters --pin-dir "$pin")
  kill "$agent_pid"
  wait "$agent_pid" 2>/dev/null || true
  agent_pid=""
  "$build/agent/microsegctl" uninstall --pin-dir "$pin" >/dev/null
}

printf '\nmicrosegctl wall-clock time in ms, best and median of %s (%s cores, load %s)\n\n' \
  "$runs" "$(nproc)" "$(cut -d' ' -f1 /proc/loadavg)"
printf '%8s %12s %12s %12s %12s\n' rules "status best" "status med" "counters best" \
  "counters med"
for rules in "${sizes[@]}"; do
  measure "$rules"
done
