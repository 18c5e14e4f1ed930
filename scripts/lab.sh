#!/usr/bin/env bash
# The microseg lab: the ERP/CRM estate of examples/erp-crm.yaml, built on this one machine.
#
# Every host of the example is a network namespace `mseg-lab-<host>` whose eth0 is a veth into a
# Linux bridge in the switch namespace `mseg-lab-sw`; nothing is created in the root network
# namespace, and only 198.18.0.0/15 and fd00::/8 addresses are used. All hosts share one L2
# segment: the office and the servers live in 198.18.0.0/24 and fd00:6d73::/64, the SaaS API in
# 198.19.0.0/24 and fd00:6d74::/64, and each side has an on-link route to the other.
#
# Each host runs its processes in one cgroup under <cgroup2 mount>/microseg-lab, laid out like
# systemd units so the policy's cgroup paths match when the agent attaches to that lab cgroup:
#
#   host      ipv4          ipv6             cgroup (under microseg-lab/)      serves
#   erp-db    198.18.0.10   fd00:6d73::10    system.slice/postgresql.service   PostgreSQL 15, 5432
#   erp-app   198.18.0.20   fd00:6d73::20    system.slice/erp-app.service      ERP API (HTTP), 8080
#   crm-web   198.18.0.30   fd00:6d73::30    system.slice/nginx.service        nginx, 80
#   erp-sync  198.18.0.40   fd00:6d73::40    system.slice/erp-sync.service     (clients only)
#   mgmt      198.18.0.50   fd00:6d73::50    system.slice/mgmt.service         (clients only)
#   office    198.18.0.130  fd00:6d73::8010  user.slice/office.scope           (a desktop)
#   saas      198.19.0.10   fd00:6d74::10    saas.slice/api.service            HTTP 443, UDP 53 echo
#
# The last three cgroups are selected by no workload of the policy; mgmt, office and saas are
# known to it only by address (inventory). fd00:6d74::10 is in no inventory entry.
#
# Usage (as root):
#   scripts/lab.sh up                          build the lab, start the servers, leave it running
#   scripts/lab.sh down                        tear it down; idempotent, safe on a half-built lab
#   scripts/lab.sh exec HOST CGROUP CMD...     run CMD in HOST's namespace and in CGROUP (relative
#                                              to the lab cgroup), e.g.
#       scripts/lab.sh exec office user.slice/office.scope curl -s http://198.18.0.30/
#   scripts/lab.sh demo                        up, start the agent, run the CHECKS table, down
#
# Environment: MSEG_LAB_STATE_DIR (default /run/microseg-lab) holds the servers' data, logs and
# lab.env; MSEG_LAB_TIMEOUT (default 30) is the deadline in seconds for each server to be ready.
# Needs iproute2, util-linux (setpriv), postgresql-15, nginx-light, python3, curl, iputils-ping.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT
readonly STATE_DIR=${MSEG_LAB_STATE_DIR:-/run/microseg-lab}
readonly LOG_DIR=$STATE_DIR/logs
readonly MARKER=$STATE_DIR/.microseg-lab
readonly READY_TIMEOUT=${MSEG_LAB_TIMEOUT:-30}
readonly PIN_DIR=/sys/fs/bpf/microseg-lab
readonly NS_PREFIX=mseg-lab-
readonly SWITCH_NS=${NS_PREFIX}sw
readonly PGBIN=/usr/lib/postgresql/15/bin
# Debian's own interpreter, not whatever python3 comes first on PATH (pyenv shims and the like).
readonly PYTHON=/usr/bin/python3

# name|ipv4|ipv6|cgroup relative to the lab cgroup|what it serves (for the summary)
readonly HOSTS=(
  "erp-db|198.18.0.10|fd00:6d73::10|system.slice/postgresql.service|postgresql 5432/tcp"
  "erp-app|198.18.0.20|fd00:6d73::20|system.slice/erp-app.service|erp api 8080/tcp"
  "crm-web|198.18.0.30|fd00:6d73::30|system.slice/nginx.service|nginx 80/tcp"
  "erp-sync|198.18.0.40|fd00:6d73::40|system.slice/erp-sync.service|-"
  "mgmt|198.18.0.50|fd00:6d73::50|system.slice/mgmt.service|-"
  "office|198.18.0.130|fd00:6d73::8010|user.slice/office.scope|-"
  "saas|198.19.0.10|fd00:6d74::10|saas.slice/api.service|http 443/tcp, echo 53/udp"
)

# The demo's checks, one client connection each, run from the source host's own cgroup.
# expect|from|to (for the report)|rule or reason|probe and its arguments
#   expect: allow  the connection must succeed;
#           audit  it must succeed and the agent records that the policy would deny it;
#           deny   it must fail.
readonly CHECKS=(
  "allow|erp-app|erp-db:5432/tcp|app-to-db|psql 198.18.0.10"
  "allow|erp-app|erp-db:5432/tcp|app-to-db over ipv6|psql fd00:6d73::10"
  "deny|crm-web|erp-db:5432/tcp|no-web-to-db (deny beats allow)|psql 198.18.0.10"
  "allow|erp-sync|erp-db:5432/tcp|sync-to-db (audit segment)|psql 198.18.0.10"
  "allow|crm-web|erp-app:8080/tcp|web-to-app-api|http http://198.18.0.20:8080/"
  "allow|office|crm-web:80/tcp|office-to-web|http http://198.18.0.30/"
  "allow|office|crm-web:80/tcp|office-to-web over ipv6|http http://[fd00:6d73::30]/"
  "deny|saas|crm-web:80/tcp|crm-web ingress default deny|http http://198.18.0.30/"
  "allow|erp-sync|saas:443/tcp|sync-to-saas (audit segment)|http http://198.19.0.10:443/"
  "audit|erp-sync|saas:53/udp|would deny: sync-dns covers world only|udp 198.19.0.10 53"
  "deny|erp-sync|crm-web:80/tcp|erp-sync egress audits, crm-web ingress denies|http http://198.18.0.30/"
  "deny|erp-app|saas:443/tcp|erp-app egress default deny|http http://198.19.0.10:443/"
  "deny|erp-app|erp-db/icmp|erp-app egress default deny, judged per packet|ping 198.18.0.10"
  "allow|mgmt|erp-db/icmp|not judged: erp-db's kernel answers echo|ping 198.18.0.10"
)

# Set to 1 by start_agent once the agent enforces; demo then judges each check.
AGENT_STARTED=0
# Set to 1 while a failure or a signal must tear the lab down.
CLEANUP_ON_EXIT=0

log() { printf 'lab: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# Fields of a HOSTS row, by host name: host_field HOST INDEX (1 ipv4, 2 ipv6, 3 cgroup, 4 serves).
host_field() {
  local row name fields
  for row in "${HOSTS[@]}"; do
    IFS='|' read -r name _ <<<"$row"
    if [[ $name == "$1" ]]; then
      IFS='|' read -ra fields <<<"$row"
      printf '%s\n' "${fields[$2]}"
      return 0
    fi
  done
  return 1
}

host_names() {
  local row
  for row in "${HOSTS[@]}"; do
    printf '%s\n' "${row%%|*}"
  done
}

host_ns() { printf '%s%s\n' "$NS_PREFIX" "$1"; }

cgroup2_mount() {
  local mount
  mount=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
  [[ -n $mount ]] || die "no cgroup2 file system is mounted (see /proc/mounts)"
  printf '%s\n' "$mount"
}

# Polls CMD until it succeeds, for at most READY_TIMEOUT seconds. PID is the background job that
# runs the server: when it is gone, the server died, so fail at once and show LOG.
wait_ready() {
  local what=$1 pid=$2 logfile=$3
  shift 3
  local deadline=$((SECONDS + READY_TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$logfile" >&2 || true
      die "$what exited before it was ready (log: $logfile)"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 20 "$logfile" >&2 || true
      die "$what not ready after ${READY_TIMEOUT}s (log: $logfile)"
    fi
    sleep 0.1
  done
}

# Runs CMD in HOST's network namespace and in CGROUP (relative to the lab cgroup).
# The wrapper shell joins the cgroup before `ip netns exec`, because ip netns exec remounts /sys
# in a private mount namespace where the cgroup2 mount is no longer visible. sh and ip both exec,
# so the pid that joined the cgroup is CMD's own pid.
run_in() {
  local host=$1 cgroup=$2
  shift 2
  sh -c 'echo $$ > "$1" && shift && exec ip netns exec "$@"' sh \
    "$LAB_CG/$cgroup/cgroup.procs" "$(host_ns "$host")" "$@"
}

# Runs CMD in HOST's network namespace only, from this script's own cgroup (readiness probes).
ns_exec() {
  local host=$1
  shift
  ip netns exec "$(host_ns "$host")" "$@"
}

check_tools() {
  local missing=() tool
  for tool in ip:iproute2 setpriv:util-linux nginx:nginx-light curl:curl ping:iputils-ping \
    timeout:coreutils; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool%%:*} (Debian package ${tool#*:})")
  done
  for tool in initdb postgres psql pg_isready; do
    [[ -x $PGBIN/$tool ]] || missing+=("$PGBIN/$tool (Debian package postgresql-15)")
  done
  [[ -x $PYTHON ]] || missing+=("$PYTHON (Debian package python3)")
  getent passwd postgres >/dev/null || missing+=("user postgres (Debian package postgresql-15)")
  if ((${#missing[@]} > 0)); then
    die "missing: ${missing[*]}"
  fi
}

# --- build -------------------------------------------------------------------------------------

make_state_dir() {
  # 0755: the postgres user must reach its data directory below.
  install -d -m 0755 "$STATE_DIR" "$LOG_DIR"
  : >"$MARKER"
  write_lab_servers
  {
    printf 'LAB_CGROUP=%s\n' "$LAB_CG"
    printf 'STATE_DIR=%s\n' "$STATE_DIR"
    printf 'PIN_DIR=%s\n' "$PIN_DIR"
    printf 'NETNS_PREFIX=%s\n' "$NS_PREFIX"
    printf 'POLICY=%s\n' "$REPO_ROOT/examples/erp-crm.yaml"
  } >"$STATE_DIR/lab.env"
}

make_cgroups() {
  local host
  mkdir "$LAB_CG"
  for host in $(host_names); do
    mkdir -p "$LAB_CG/$(host_field "$host" 3)"
  done
}

# One bridge in the switch namespace; each host's eth0 is created inside the host namespace with
# its peer created directly in the switch namespace, so no interface ever exists in the root one.
make_network() {
  local host ns port ipv4 ipv6
  ip netns add "$SWITCH_NS"
  ip -n "$SWITCH_NS" link set lo up
  ip -n "$SWITCH_NS" link add br0 type bridge stp_state 0 mcast_snooping 0
  ip -n "$SWITCH_NS" link set br0 up

  for host in $(host_names); do
    ns=$(host_ns "$host")
    port=p-$host
    ipv4=$(host_field "$host" 1)
    ipv6=$(host_field "$host" 2)
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$ns" link add eth0 type veth peer name "$port" netns "$SWITCH_NS"
    ip -n "$SWITCH_NS" link set "$port" master br0 up
    # nodad: the address is usable at once, so servers can bind it without waiting for DAD.
    if [[ $host == saas ]]; then
      ip -n "$ns" addr add "$ipv4/24" dev eth0
      ip -n "$ns" addr add "$ipv6/64" dev eth0 nodad
      ip -n "$ns" link set eth0 up
      ip -n "$ns" route add 198.18.0.0/24 dev eth0
      ip -n "$ns" route add fd00:6d73::/64 dev eth0
    else
      ip -n "$ns" addr add "$ipv4/24" dev eth0
      ip -n "$ns" addr add "$ipv6/64" dev eth0 nodad
      ip -n "$ns" link set eth0 up
      ip -n "$ns" route add 198.19.0.0/24 dev eth0
      ip -n "$ns" route add fd00:6d74::/64 dev eth0
    fi
  done
}

# A small server and probe for the hosts that Debian has no daemon for: a fixed HTTP answer on
# given addresses (the ERP API and the SaaS API) and a UDP echo (DNS-like traffic to the SaaS).
write_lab_servers() {
  cat >"$STATE_DIR/labsrv.py" <<'EOF'
"""Lab servers and probes for scripts/lab.sh.

  labsrv.py http PORT BODY ADDR...       answer every GET with BODY on each ADDR:PORT
  labsrv.py udp-echo PORT ADDR...        echo every datagram back, on each ADDR:PORT
  labsrv.py udp-probe ADDR PORT TIMEOUT  send one datagram, exit 0 if it comes back in TIMEOUT s
"""
import http.server
import signal
import socket
import sys
import threading


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def serve_http(port, body, addrs):
    payload = (body + "\n").encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    for addr in addrs:
        server_class = type("Server", (http.server.ThreadingHTTPServer,),
                            {"address_family": family(addr)})
        server = server_class((addr, port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()


def serve_udp_echo(port, addrs):
    def loop(sock):
        while True:
            data, peer = sock.recvfrom(65535)
            sock.sendto(data, peer)

    for addr in addrs:
        sock = socket.socket(family(addr), socket.SOCK_DGRAM)
        sock.bind((addr, port))
        threading.Thread(target=loop, args=(sock,), daemon=True).start()


def udp_probe(addr, port, timeout):
    payload = b"microseg-lab probe"
    with socket.socket(family(addr), socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((addr, port))
        try:
            sock.send(payload)
            reply = sock.recv(65535)
        except OSError as err:
            print(f"udp {addr} {port}: {err}")
            return 1
    print(f"udp {addr} {port}: {'echoed' if reply == payload else 'wrong reply'}")
    return 0 if reply == payload else 1


def main(argv):
    if argv[1] == "http":
        serve_http(int(argv[2]), argv[3], argv[4:])
    elif argv[1] == "udp-echo":
        serve_udp_echo(int(argv[2]), argv[3:])
    elif argv[1] == "udp-probe":
        return udp_probe(argv[2], int(argv[3]), float(argv[4]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(f"{argv[1]} serving", flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
EOF
}

start_postgres() {
  local pg=$STATE_DIR/pg logfile=$LOG_DIR/postgres.log cgroup pid
  cgroup=$(host_field erp-db 3)
  install -d -o postgres -g postgres -m 0700 "$pg" "$pg/data" "$pg/run"
  # cd /: the postgres user cannot read the caller's working directory (often /root).
  (cd / && setpriv --reuid=postgres --regid=postgres --init-groups \
    "$PGBIN/initdb" -D "$pg/data" -U postgres -A trust -E UTF8 --locale=C --no-sync) \
    >"$logfile" 2>&1 || {
    tail -n 20 "$logfile" >&2
    die "initdb failed (log: $logfile)"
  }
  cat >>"$pg/data/postgresql.conf" <<EOF
listen_addresses = '$(host_field erp-db 1),$(host_field erp-db 2)'
port = 5432
unix_socket_directories = '$pg/run'
max_connections = 20
shared_buffers = 16MB
# In the data directory, so a killed server leaves nothing in /dev/shm.
dynamic_shared_memory_type = mmap
# A throw-away lab database: durability buys nothing here.
fsync = off
EOF
  cat >>"$pg/data/pg_hba.conf" <<EOF
host all all 198.18.0.0/15 trust
host all all fd00::/8 trust
EOF
  (cd / && run_in erp-db "$cgroup" setpriv --reuid=postgres --regid=postgres --init-groups \
    "$PGBIN/postgres" -D "$pg/data") </dev/null >>"$logfile" 2>&1 &
  pid=$!
  wait_ready "postgresql on 198.18.0.10" "$pid" "$logfile" \
    ns_exec erp-app "$PGBIN/pg_isready" -q -t 1 -h 198.18.0.10 -p 5432
  wait_ready "postgresql on [fd00:6d73::10]" "$pid" "$logfile" \
    ns_exec erp-app "$PGBIN/pg_isready" -q -t 1 -h fd00:6d73::10 -p 5432
}

start_nginx() {
  local dir=$STATE_DIR/nginx logfile=$LOG_DIR/nginx-error.log cgroup pid
  cgroup=$(host_field crm-web 3)
  install -d -m 0755 "$dir" "$dir/tmp"
  cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
pid $dir/nginx.pid;
error_log $logfile;
events { worker_connections 64; }
http {
  access_log $LOG_DIR/nginx-access.log;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  server {
    listen $(host_field crm-web 1):80;
    listen [$(host_field crm-web 2)]:80;
    default_type text/plain;
    location / { return 200 "crm-web ok\n"; }
  }
}
EOF
  run_in crm-web "$cgroup" nginx -p "$dir" -e "$logfile" -c "$dir/nginx.conf" -g 'daemon off;' \
    </dev/null >>"$LOG_DIR/nginx.log" 2>&1 &
  pid=$!
  wait_ready "nginx on 198.18.0.30" "$pid" "$logfile" \
    ns_exec office curl -sf --max-time 1 http://198.18.0.30/
  wait_ready "nginx on [fd00:6d73::30]" "$pid" "$logfile" \
    ns_exec office curl -sfg --max-time 1 'http://[fd00:6d73::30]/'
}

start_python_servers() {
  local logfile cgroup
  logfile=$LOG_DIR/erp-api.log
  cgroup=$(host_field erp-app 3)
  run_in erp-app "$cgroup" "$PYTHON" -u "$STATE_DIR/labsrv.py" http 8080 "erp-api ok" \
    "$(host_field erp-app 1)" "$(host_field erp-app 2)" </dev/null >>"$logfile" 2>&1 &
  wait_ready "erp api on 198.18.0.20:8080" "$!" "$logfile" \
    ns_exec crm-web curl -sf --max-time 1 http://198.18.0.20:8080/

  # Plain HTTP on 443: the policy matches the port, not TLS, and the lab needs no certificates.
  logfile=$LOG_DIR/saas-https.log
  cgroup=$(host_field saas 3)
  run_in saas "$cgroup" "$PYTHON" -u "$STATE_DIR/labsrv.py" http 443 "saas-api ok" \
    "$(host_field saas 1)" "$(host_field saas 2)" </dev/null >>"$logfile" 2>&1 &
  wait_ready "saas api on 198.19.0.10:443" "$!" "$logfile" \
    ns_exec erp-sync curl -sf --max-time 1 http://198.19.0.10:443/

  logfile=$LOG_DIR/saas-dns.log
  run_in saas "$cgroup" "$PYTHON" -u "$STATE_DIR/labsrv.py" udp-echo 53 \
    "$(host_field saas 1)" "$(host_field saas 2)" </dev/null >>"$logfile" 2>&1 &
  wait_ready "saas udp echo on 198.19.0.10:53" "$!" "$logfile" \
    ns_exec erp-sync "$PYTHON" "$STATE_DIR/labsrv.py" udp-probe 198.19.0.10 53 0.5
}

print_summary() {
  local row name ipv4 ipv6 cgroup serves
  printf 'microseg lab is up\n'
  printf '  lab cgroup  %s\n' "$LAB_CG"
  printf '  state       %s (logs in %s, settings in %s/lab.env)\n' "$STATE_DIR" "$LOG_DIR" \
    "$STATE_DIR"
  printf '\n  %-9s %-19s %-13s %-16s %-32s %s\n' host netns ipv4 ipv6 cgroup serves
  for row in "${HOSTS[@]}"; do
    IFS='|' read -r name ipv4 ipv6 cgroup serves <<<"$row"
    printf '  %-9s %-19s %-13s %-16s %-32s %s\n' "$name" "$(host_ns "$name")" "$ipv4" "$ipv6" \
      "$cgroup" "$serves"
  done
  printf '\n  try   %s exec office user.slice/office.scope curl -s http://198.18.0.30/\n' "$0"
  printf '  stop  %s down\n' "$0"
}

lab_namespaces() {
  ip netns list | awk -v prefix="$NS_PREFIX" 'index($1, prefix) == 1 { print $1 }'
}

lab_is_present() {
  [[ -e $STATE_DIR || -e $LAB_CG || -n $(lab_namespaces) ]]
}

lab_up() {
  check_tools
  if lab_is_present; then
    die "a lab (or what is left of one) exists; run '$0 down' first"
  fi
  CLEANUP_ON_EXIT=1
  log "building the lab"
  make_state_dir
  make_cgroups
  make_network
  log "starting servers"
  start_postgres
  start_nginx
  start_python_servers
}

# --- agent -------------------------------------------------------------------------------------

# The agent's binaries: built by scripts/build.sh into build/ (or $MSEG_BUILD_DIR).
readonly BUILD_DIR=${MSEG_BUILD_DIR:-$REPO_ROOT/build}
readonly MICROSEGD=$BUILD_DIR/agent/microsegd
readonly MICROSEGCTL=$BUILD_DIR/agent/microsegctl

# start_agent: starts microsegd on the lab cgroup, from the root network namespace and outside
# the lab cgroup, and returns once it reports that it enforces the policy.
start_agent() {
  [[ -x $MICROSEGD ]] || die "$MICROSEGD is not built; run scripts/build.sh"
  mkdir -p "$STATE_DIR/agent"
  rm -f "$STATE_DIR/agent/status.json"
  "$MICROSEGD" --policy "$REPO_ROOT/examples/erp-crm.yaml" --cgroup "$LAB_CG" \
    --state-dir "$STATE_DIR/agent" --pin-dir "$PIN_DIR" --stats-interval 1 \
    --control-socket "$STATE_DIR/agent/control.sock" >"$LOG_DIR/agent.log" 2>&1 &
  local pid=$!
  echo "$pid" >"$STATE_DIR/agent.pid"
  wait_ready microsegd "$pid" "$LOG_DIR/agent.log" agent_enforcing "$pid"
  AGENT_STARTED=1
  log "microsegd enforces examples/erp-crm.yaml on $LAB_CG (pid $pid, log $LOG_DIR/agent.log)"
}

agent_enforcing() {
  local pid=$1
  grep -q "\"pid\": $pid," "$STATE_DIR/agent/status.json" 2>/dev/null
}

# stop_agent: stops the agent that start_agent started, if any, then removes what it attached
# and pinned (the agent itself leaves its programs enforcing on purpose). Safe when none runs.
stop_agent() {
  local pidfile=$STATE_DIR/agent.pid pid deadline
  if [[ -f $pidfile ]]; then
    pid=$(<"$pidfile")
    if kill -TERM "$pid" 2>/dev/null; then
      deadline=$((SECONDS + 10))
      while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
        sleep 0.1
      done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  fi
  if [[ -d $PIN_DIR ]]; then
    if [[ -x $MICROSEGCTL ]]; then
      "$MICROSEGCTL" uninstall --pin-dir "$PIN_DIR" >/dev/null
    else
      rm -rf "$PIN_DIR"
    fi
  fi
}

# Shows what the agent reported: its per-rule counters, and the audit and deny summaries it
# logged (one line per rule and second with new hits, never one per packet).
show_agent_report() {
  sleep 1.5  # the agent summarises counter changes once a second in the lab
  printf '\n--- microsegctl counters (per-rule verdict counters in the kernel) ---\n'
  "$MICROSEGCTL" counters --pin-dir "$PIN_DIR"
  printf '\n--- microsegctl flows --verdict denied (the last denials the agent recorded) ---\n'
  "$MICROSEGCTL" flows --verdict denied --last 5 --socket "$STATE_DIR/agent/control.sock"
  printf '\n--- microsegctl policy trace: why crm-web may not reach the database ---\n'
  "$MICROSEGCTL" policy trace --from crm-web --to 198.18.0.10 --proto tcp --port 5432 \
    --socket "$STATE_DIR/agent/control.sock"
  printf '\n--- what microsegd logged about denied and would-deny traffic ---\n'
  grep -E "traffic (denied|would be denied)" "$LOG_DIR/agent.log" | sed 's/^/  /' || true
}

# --- demo --------------------------------------------------------------------------------------

# Runs one probe from HOST's namespace and cgroup; succeeds when the client's connection worked.
# A 10 s backstop guards against a client that ignores its own timeout.
probe() {
  local host=$1 kind=$2
  shift 2
  local cgroup
  cgroup=$(host_field "$host" 3)
  case $kind in
    psql)
      local conninfo="host=$1 port=5432 user=postgres dbname=postgres connect_timeout=3"
      run_in "$host" "$cgroup" timeout 10 "$PGBIN/psql" -X -At -c 'SELECT 1' \
        "$conninfo sslmode=disable gssencmode=disable"
      ;;
    http) run_in "$host" "$cgroup" timeout 10 curl -sSfg --max-time 3 "$1" ;;
    ping) run_in "$host" "$cgroup" timeout 10 ping -n -c1 -W1 "$1" ;;
    udp)
      run_in "$host" "$cgroup" timeout 10 "$PYTHON" "$STATE_DIR/labsrv.py" udp-probe "$1" "$2" 3
      ;;
    *) die "unknown probe $kind" ;;
  esac
}

describe_probe() {
  case $1 in
    psql) printf 'psql SELECT 1 %s' "$2" ;;
    http) printf 'curl GET %s' "$2" ;;
    ping) printf 'ping %s' "$2" ;;
    udp) printf 'udp echo %s:%s' "$2" "$3" ;;
  esac
}

# Runs every check and prints one line each; once an agent enforces, also judges them and, for an
# unexpected outcome, shows the client's last words. False when any check was unexpected.
run_checks() {
  local row expect from to why probe_args output observed verdict
  local total=0 as_expected=0
  for row in "${CHECKS[@]}"; do
    IFS='|' read -r expect from to why probe_args <<<"$row"
    read -ra probe_args <<<"$probe_args"
    if output=$(probe "$from" "${probe_args[@]}" 2>&1); then
      observed=passed
    else
      observed=blocked
    fi

    total=$((total + 1))
    if ((AGENT_STARTED == 0)); then
      verdict=$observed
    elif [[ ($expect == deny && $observed == blocked) || ($expect != deny && $observed == passed) ]]
    then
      verdict="$observed, ok"
      as_expected=$((as_expected + 1))
    else
      verdict="$observed, UNEXPECTED"
    fi
    printf '%-6s %-8s -> %-17s %-38s ... %-18s [%s]\n' "${expect^^}" "$from" "$to" \
      "$(describe_probe "${probe_args[@]}")" "$verdict" "$why"
    if [[ $verdict == *UNEXPECTED ]]; then
      tail -n 3 <<<"$output" | sed 's/^/         | /'
    fi
  done

  if ((AGENT_STARTED == 0)); then
    printf '\n%d checks run; no agent enforced, so outcomes are shown but not judged\n' "$total"
    return 0
  fi
  printf '\n%d passed, %d failed\n' "$as_expected" $((total - as_expected))
  ((as_expected == total))
}

lab_demo() {
  local result=0
  lab_up
  start_agent
  run_checks || result=$?
  show_agent_report
  return "$result"
}

# --- teardown ----------------------------------------------------------------------------------

# Signals the servers to stop cleanly: PostgreSQL through its postmaster alone (a signalled child
# looks like a crash to it) with a fast shutdown, everything else with SIGTERM. A postmaster that
# has not written its pid file yet is the only process in its cgroup and gets SIGTERM too.
stop_servers_gracefully() {
  local pidfile=$STATE_DIR/pg/data/postmaster.pid pg_procs procs pid
  pg_procs=$LAB_CG/$(host_field erp-db 3)/cgroup.procs
  if [[ -f $pidfile ]]; then
    kill -INT "$(head -n 1 "$pidfile")" 2>/dev/null || true
  fi
  while IFS= read -r procs; do
    [[ $procs == "$pg_procs" && -f $pidfile ]] && continue
    while IFS= read -r pid; do
      kill -TERM "$pid" 2>/dev/null || true
    done <"$procs"
  done < <(find "$LAB_CG" -name cgroup.procs)
}

# Waits until no process is left in the lab cgroup tree; false after SECONDS_LEFT seconds.
wait_cgroup_empty() {
  local deadline=$((SECONDS + $1))
  until grep -q '^populated 0' "$LAB_CG/cgroup.events"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

kill_cgroup_tree() {
  local procs pid
  if [[ -f $LAB_CG/cgroup.kill ]]; then
    echo 1 >"$LAB_CG/cgroup.kill"
    return
  fi
  while IFS= read -r procs; do
    while IFS= read -r pid; do
      kill -KILL "$pid" 2>/dev/null || true
    done <"$procs"
  done < <(find "$LAB_CG" -name cgroup.procs)
}

# A postmaster that was killed leaves its pid file and its small System V segment (the id is on
# line 7 of postmaster.pid); a clean shutdown removes both.
remove_postgres_shm() {
  local pidfile=$STATE_DIR/pg/data/postmaster.pid shm_id
  [[ -f $pidfile ]] || return 0
  shm_id=$(sed -n '7p' "$pidfile" | awk '{ print $2 }')
  [[ -n $shm_id ]] && ipcrm -m "$shm_id"
}

lab_down() {
  local ns
  # Teardown goes on past a failing step, so that one leftover does not keep the others.
  set +e
  stop_agent

  if [[ -d $LAB_CG ]]; then
    stop_servers_gracefully
    if ! wait_cgroup_empty 10; then
      log "servers still running after 10s; killing them"
      kill_cgroup_tree
      wait_cgroup_empty 5 || log "warning: processes remain in $LAB_CG"
    fi
    remove_postgres_shm
    find "$LAB_CG" -depth -type d -exec rmdir {} \;
    [[ -d $LAB_CG ]] && log "warning: could not remove $LAB_CG"
  fi

  for ns in $(lab_namespaces); do
    [[ -n $(ip netns pids "$ns" 2>/dev/null) ]] && log "warning: processes remain in netns $ns"
    ip netns del "$ns"
  done

  # Only a directory that this script made (it holds the marker) is removed.
  if [[ -f $MARKER ]]; then
    rm -rf --one-file-system "$STATE_DIR"
  elif [[ -e $STATE_DIR ]]; then
    log "warning: $STATE_DIR has no $(basename "$MARKER") marker; left in place"
  fi
  set -e
}

on_exit() {
  local rc=$?
  if ((CLEANUP_ON_EXIT == 1)); then
    CLEANUP_ON_EXIT=0
    log "tearing the lab down"
    lab_down
  fi
  exit "$rc"
}

usage() {
  sed -n '/^# Usage/,/^# Needs/p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

main() {
  (($# >= 1)) || usage
  ((EUID == 0)) || die "the lab needs root (network namespaces, cgroups)"
  LAB_CG=$(cgroup2_mount)/microseg-lab
  readonly LAB_CG

  trap on_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  case $1 in
    up)
      lab_up
      CLEANUP_ON_EXIT=0
      print_summary
      ;;
    down)
      lab_down
      ;;
    demo)
      lab_demo
      ;;
    exec)
      (($# >= 4)) || usage
      local host=$2 cgroup=$3
      shift 3
      host_field "$host" 0 >/dev/null || die "unknown host $host (hosts: $(host_names | xargs))"
      [[ $cgroup != *..* && -d $LAB_CG/$cgroup ]] || die "no lab cgroup $cgroup under $LAB_CG"
      [[ -f $MARKER ]] || die "the lab is not up"
      run_in "$host" "$cgroup" "$@"
      ;;
    *)
      usage
      ;;
  esac
}

main "$@"
