#!/usr/bin/env bash
# Flow telemetry throughput and agent footprint, printed as a table (not a test).
#
# Two namespaces joined by veth (198.18.90.0/24), a client and a server each in a cgroup under
# <cgroup2>/microseg-bench that microsegd manages with a policy allowing the load. connect_load
# opens and closes connections for SECONDS; every connection yields four flow records (start
# and end at the client's egress and at the server's ingress). Reported side by side in one run:
# the connection rate without the agent and with it, the records written per second, events
# lost, and the agent's RSS and CPU idle and under load.
#
# usage (root): bench/telemetry.sh [SECONDS]   (build first: scripts/build.sh)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${MSEG_BUILD_DIR:-$root/build}
seconds=${1:-10}
load=$build/bench/connect_load
cgroot=$(awk '$3 == "cgroup2" {print $2; exit}' /proc/mounts)
cg=$cgroot/microseg-bench
work=$(mktemp -d /tmp/mseg-bench.XXXXXX)
pin=/sys/fs/bpf/mseg-bench
agent_pid=""
server_pid=""

cleanup() {
  [[ -n $agent_pid ]] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null || true
  [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null || true
  "$build/agent/microsegctl" uninstall --pin-dir "$pin" >/dev/null 2>&1 || true
  ip netns del mseg-bench-c 2>/dev/null || true
  ip netns del mseg-bench-s 2>/dev/null || true
  for dir in "$cg/client.service" "$cg/server.service" "$cg"; do
    [[ -d $dir ]] && { echo 1 >"$dir/cgroup.kill" 2>/dev/null || true; sleep 0.2; rmdir "$dir" 2>/dev/null || true; }
  done
  rm -rf "$work"
}
trap cleanup EXIT

in_cgroup() {  # in_cgroup CGROUP NETNS CMD...: run CMD inside both
  local group=$1 ns=$2
  shift 2
  bash -c 'echo $$ >"$0/cgroup.procs" && exec ip netns exec "$@"' "$cg/$group" "$ns" "$@"
}

ip netns add mseg-bench-c
ip netns add mseg-bench-s
ip -n mseg-bench-c link add eth0 type veth peer name eth0 netns mseg-bench-s
ip -n mseg-bench-c addr add 198.18.90.1/24 dev eth0
ip -n mseg-bench-s addr add 198.18.90.2/24 dev eth0
for ns in mseg-bench-c mseg-bench-s; do
  ip -n "$ns" link set lo up
  ip -n "$ns" link set eth0 up
  ip netns exec "$ns" sysctl -qw net.ipv4.ip_local_port_range="10000 65000"
done
mkdir -p "$cg/client.service" "$cg/server.service"

cat >"$work/policy.yaml" <<'POLICY'
version: 1
workloads:
  - name: client
    cgroup: client.service
    labels: {role: client}
  - name: server
    cgroup: server.service
    labels: {role: server}
inventory:
  - name: client-host
    cidrs: [198.18.90.1/32]
    labels: {role: client}
  - name: server-host
    cidrs: [198.18.90.2/32]
    labels: {role: server}
segments:
  - name: bench
    rules:
      - name: client-to-server
        from: {role: client}
        to: {role: server}
        protocol: tcp
        ports: [8000]
POLICY

in_cgroup server.service mseg-bench-s "$load" --serve 198.18.90.2 8000 2 >"$work/server.out" &
server_pid=$!
for _ in $(seq 100); do grep -q listening "$work/server.out" 2>/dev/null && break; sleep 0.05; done

run_load() { in_cgroup client.service mseg-bench-c "$load" 198.18.90.2 8000 "$seconds" 1; }
json() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

baseline=$(run_load)

"$build/agent/microsegd" --policy "$work/policy.yaml" --cgroup "$cg" --pin-dir "$pin" \
  --state-dir "$work/state" --stats-interval 0 --control-socket "$work/control.sock" \
  >"$work/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 200); do [[ -f $work/state/status.json ]] && break; sleep 0.05; done
sleep 2
idle_rss=$(rss_kb "$agent_pid")
idle_cpu0=$(cpu_ticks "$agent_pid")
sleep 2
idle_cpu1=$(cpu_ticks "$agent_pid")

cpu0=$(cpu_ticks "$agent_pid")
with_agent=$(run_load)
sleep 3  # the agent drains the ring buffer and flushes once a second
cpu1=$(cpu_ticks "$agent_pid")
load_rss=$(rss_kb "$agent_pid")
counters=$("$build/agent/microsegctl" counters --pin-dir "$pin")
lost=$(awk '$1 == "event_lost" {print $2}' <<<"$counters")
echo "$counters" >"$work/counters.txt"; cp "$work/counters.txt" /tmp/mseg-bench-counters.txt
hz=$(getconf CLK_TCK)
# The flow log rotates (100 MiB, 5 kept), so count what the agent says it exported.
kill "$agent_pid"
wait "$agent_pid" 2>/dev/null || true
agent_pid=""
records=$(sed -n 's/.*records_exported=\([0-9]*\).*/\1/p' "$work/agent.log" | tail -1)

base_rate=$(json "$baseline" connections_per_second)
agent_rate=$(json "$with_agent" connections_per_second)
connections=$(json "$with_agent" connections)
printf '\nmicroseg telemetry benchmark (%ss of load, %s cores)\n\n' "$seconds" "$(nproc)"
printf '%-44s %14s\n' "connections/s, no agent" "$base_rate"
printf '%-44s %14s\n' "connections/s, agent with telemetry" "$agent_rate"
printf '%-44s %14.3f\n' "ratio" "$(python3 -c "print($agent_rate / $base_rate)")"
printf '%-44s %14s\n' "connect p50 us, no agent / agent" \
  "$(json "$baseline" connect_p50_us) / $(json "$with_agent" connect_p50_us)"
printf '%-44s %14s\n' "flow records written" "$records"
printf '%-44s %14s\n' "expected (4 per connection)" "$((connections * 4))"
printf '%-44s %14.0f\n' "flow records per second" "$(python3 -c "print($records / $seconds)")"
printf '%-44s %14s\n' "events lost (ring buffer full)" "${lost:-0}"
printf '%-44s %14s\n' "agent RSS idle / under load (MiB)" \
  "$((idle_rss / 1024)) / $((load_rss / 1024))"
printf '%-44s %14s\n' "agent CPU idle / under load (% of a core)" \
  "$(python3 -c "print(round(100*($idle_cpu1-$idle_cpu0)/$hz/2,1))") / $(python3 -c "print(round(100*($cpu1-$cpu0)/$hz/($seconds+2),1))")"
