#!/usr/bin/env bash
# Policy scale: how long the agent takes to apply a policy of 10 to 100,000 rules
# (bench/gen_policy.py) as one file and as a directory of 100 files, and the example policy,
# broken down into the stages it logs (read, parse, compile, prepare = bind cgroups and build
# the bank, kernel = write the bank and flip), in four situations:
#   start    the agent starts on empty maps and writes a whole bank;
#   reload   SIGHUP with the files unchanged;
#   1 rule   one file is edited so that one rule gets another port (picked up by inotify);
#            for a directory, a file in the middle of it;
#   all new  every rule gets another port: a whole new policy over the running one (a file
#            renamed over the old one; a directory as a symlink swapped to a new release).
# Also the agent's RSS after the start. Prints tables, not a test. Attaches only to its own
# cgroup under the cgroup v2 mount.
#
# usage (root): bench/policy_scale.sh [RULES...]   (default: 10 1000 10000 100000;
#                                                   build first: scripts/build.sh)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${MSEG_BUILD_DIR:-$root/build}
cgroot=$(awk '$3 == "cgroup2" {print $2; exit}' /proc/mounts)
cg=$cgroot/microseg-bench-scale-$$  # per run: two engineers may benchmark at once
work=$(mktemp -d /tmp/mseg-scale.XXXXXX)
pin=/sys/fs/bpf/mseg-bench-scale-$$
agent_pid=""
sizes=("$@")
[[ ${#sizes[@]} -gt 0 ]] || sizes=(10 1000 10000 100000)

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

applied_count() { grep -c "policy applied" "$work/agent.log" || true; }

wait_applied() {
  local want=$1
  for _ in $(seq 600); do
    [[ $(applied_count) -ge $want ]] && return 0
    sleep 0.05
  done
  echo "the agent did not apply policy #$want; its log:" >&2
  cat "$work/agent.log" >&2
  exit 1
}

# stages N: the Nth "policy applied" line's "read parse compile prepare kernel total" (ms), then
# the entries the kernel update changed and how its time split into diffing and bpf() writes.
stages() {
  local line
  line=$(grep "policy applied" "$work/agent.log" | sed -n "${1}p")
  for field in read_ms parse_ms compile_ms prepare_ms kernel_ms took_ms kernel_changed \
    kernel_diff_ms kernel_write_ms; do
    sed "s/.* $field=\([0-9.]*\).*/\1/" <<<"$line"
  done
}

row() {
  local name=$1 rules=$2 situation=$3
  # shellcheck disable=SC2046
  printf "$row_format" "$name" "$rules" "$situation" $(stages "$4")
}

# An edited copy of the policy: the first rule's first port becomes 7.
edit_one_rule() {
  python3 - "$1" <<'EOF'
import re, sys
path = sys.argv[1]
text = open(path).read()
text = re.sub(r"ports: \[[^\]]*\]", "ports: [7]", text, count=1)
open(path + ".new", "w").write(text)
EOF
  mv "$1.new" "$1"
}

# measure NAME SOURCE NEXT [FILE-TO-EDIT]: SOURCE and NEXT are policy files or directories
# (NEXT with every rule changed); FILE-TO-EDIT is relative to the directory.
measure() {
  local name=$1 source=$2 next=$3 edited policy
  rm -rf "$work/state" "$work/policy.yaml" "$work/policy.d" "$work/release-"*
  if [[ -d $source ]]; then
    policy=$work/policy.d
    cp -r "$source" "$work/release-1"
    ln -s release-1 "$policy"
    edited=$work/release-1/$4
  else
    policy=$work/policy.yaml
    cp "$source" "$policy"
    edited=$policy
  fi
  "$build/agent/microsegctl" uninstall --pin-dir "$pin" >/dev/null 2>&1 || true
  "$build/agent/microsegd" --policy "$policy" --cgroup "$cg" --pin-dir "$pin" \
    --state-dir "$work/state" --stats-interval 0 --control-socket "$work/control.sock" \
    >"$work/agent.log" 2>&1 &
  agent_pid=$!
  wait_applied 1
  local rss rules
  rss=$(awk '/^VmRSS/ {print int($2 / 1024)}' "/proc/$agent_pid/status")
  rules=$(grep -o 'rules=[0-9]*' "$work/agent.log" | head -1 | cut -d= -f2)
  sleep 0.5  # let the agent bring the other bank up to date, as it does after every apply
  kill -HUP "$agent_pid"
  wait_applied 2
  sleep 0.5
  edit_one_rule "$edited"
  wait_applied 3
  sleep 0.5
  if [[ -d $source ]]; then
    cp -r "$next" "$work/release-2"
    ln -s release-2 "$work/policy.new"
    mv -T "$work/policy.new" "$policy"
  else
    cp "$next" "$policy.new"
    mv "$policy.new" "$policy"
  fi
  wait_applied 4
  row "$name" "$rules" start 1
  row "$name" "$rules" reload 2
  row "$name" "$rules" "1 rule" 3
  row "$name" "$rules" "all new" 4
  rss_rows+=("$(printf '%-16s %8s %10s' "$name" "$rules" "$rss")")
  kill "$agent_pid"
  wait "$agent_pid" 2>/dev/null || true
  agent_pid=""
}

printf '\nmicroseg policy apply time in ms (%s cores, load %s)\n\n' "$(nproc)" \
  "$(cut -d' ' -f1 /proc/loadavg)"
row_format='%-10s %7s %-7s %7s %7s %8s %8s %7s %8s | %8s %6s %7s\n'
# shellcheck disable=SC2059
printf "$row_format" policy rules when read parse compile prepare kernel total changed diff write
rss_rows=()
sed 's/5432/5433/g' "$root/examples/erp-crm.yaml" >"$work/example-next.yaml"
measure example "$root/examples/erp-crm.yaml" "$work/example-next.yaml"
for rules in "${sizes[@]}"; do
  "$root/bench/gen_policy.py" "$rules" >"$work/policy-$rules.yaml"
  "$root/bench/gen_policy.py" "$rules" --port-base 2048 >"$work/next-$rules.yaml"
  measure synthetic "$work/policy-$rules.yaml" "$work/next-$rules.yaml"
  if [[ $rules -ge 100 ]]; then
    "$root/bench/gen_policy.py" "$rules" --files 100 "$work/policy-$rules.d"
    "$root/bench/gen_policy.py" "$rules" --files 100 "$work/next-$rules.d" --port-base 2048
    measure "100 files" "$work/policy-$rules.d" "$work/next-$rules.d" rules-0050.yaml
  fi
done
printf '\nagent RSS after start\n\n%-16s %8s %10s\n' policy rules "RSS MiB"
printf '%s\n' "${rss_rows[@]}"
echo
echo "kernel: finding and writing the difference into the inactive bank and flipping to it; the"
echo "new policy enforces from then on. changed: map entries written or deleted; diff: comparing"
echo "with what the bank holds (userspace); write: the bpf() calls, flip included. The agent then"
echo "brings the other bank up to date (not counted), so a reload writes only what changed."
