#!/usr/bin/env python3
"""microseg side by side with iptables, ipset and nftables, on the same hosts and traffic.

Two network namespaces joined by a veth pair stand for a client host and a server host
(198.18.92.1 and 198.18.92.2). Every variant filters both: the client's outgoing and the
server's incoming new connections, with equivalent rules:

  no filter              nothing: the physical limit of this machine
  microseg, telemetry off / on
                         one microsegd attached to a cgroup this script creates, holding the
                         client and server processes; policy with the same allowed peers/ports
  iptables legacy / nft  linear rules (iptables-legacy-restore, iptables-nft-restore)
  iptables + ipset       one hash:ip,port set matched by one rule
  nftables linear        one rule per allowed peer and port (nft -f)
  nftables sets          one concatenated set (address . protocol . port)

At size N each host holds N rules over N peer prefixes; the measured flows (TCP 8000 for
connections, TCP 5201 for iperf3, UDP 8001 for datagrams) are the LAST three rules, so a linear
scan walks all of them. The iptables and nft rules sit inside the test namespaces (ip netns
exec) and never in the machine's own; conntrack admits established traffic first, as host
firewalls do. Measured per variant and size: TCP connections/s and connect() p50/p99
(connect_load), TCP bulk throughput (iperf3), 64-byte UDP datagrams/s (udp_load), the time to
load the rules and to change one, and for microseg the agent's RSS and CPU and the run time of
each BPF program per connection (BPF_ENABLE_STATS, the fd form of kernel.bpf_stats_enabled).
Rates are also given as ratios to no filter, measured right before and after each variant, so
drift on a shared machine cancels as far as it can.

usage (root, after scripts/build.sh): bench/compare.py [--quick] [--sizes 10,1000]
    [--seconds S] [--variants a,b] [--out DIR]
Writes OUT/compare.json and OUT/compare.png (gnuplot), and prints a table.
"""
import argparse
import ctypes
import datetime
import ipaddress
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("MSEG_BUILD_DIR", os.path.join(ROOT, "build"))
CONNECT_LOAD = os.path.join(BUILD, "bench", "connect_load")
UDP_LOAD = os.path.join(BUILD, "bench", "udp_load")
MICROSEGD = os.path.join(BUILD, "agent", "microsegd")
MICROSEGCTL = os.path.join(BUILD, "agent", "microsegctl")

CLIENT_NS = "mseg-cmp-c"
SERVER_NS = "mseg-cmp-s"
CLIENT_IP = "198.18.92.1"
SERVER_IP = "198.18.92.2"
PIN_DIR = "/sys/fs/bpf/mseg-cmp"
CONNECT_PORT = 8000
BULK_PORT = 5201
UDP_PORT = 8001
# The measured flows, matched by the last rules of every rule set.
MEASURED = [("tcp", CONNECT_PORT), ("tcp", BULK_PORT), ("udp", UDP_PORT)]

FULL_SIZES = [10, 1000, 10000, 100000]
QUICK_SIZES = [10, 1000]
VARIANTS = ["microseg-off", "microseg-on", "iptables-legacy", "iptables-nft", "ipset",
            "nft-linear", "nft-set"]
LABELS = {
    "no-filter": "no filter",
    "microseg-off": "microseg, telemetry off",
    "microseg-on": "microseg, telemetry on",
    "iptables-legacy": "iptables-legacy linear",
    "iptables-nft": "iptables-nft linear",
    "ipset": "iptables + ipset",
    "nft-linear": "nftables linear",
    "nft-set": "nftables set",
}


def log(message):
    print(message, file=sys.stderr, flush=True)


def run(argv, **kwargs):
    """Runs a command to completion; its failure is an error naming the command."""
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])} failed ({result.returncode}): "
                           f"{result.stderr.strip()[:500]}")
    return result.stdout


def in_ns(ns, argv):
    """argv inside a test namespace. Every filter command goes through here, so no rule can
    land in the machine's own namespace."""
    assert ns in (CLIENT_NS, SERVER_NS)
    return ["ip", "netns", "exec", ns] + argv


def timed(argv, stdin_text=None):
    """Seconds a command takes, by the wall clock."""
    started = time.monotonic()
    run(argv, input=stdin_text)
    return time.monotonic() - started


# ---------------------------------------------------------------------------------------------
# The rule set of one size: N allowed (peer prefix, protocol, port) per host, measured last.

def synthetic_peers(count):
    """Distinct /32 prefixes from 198.18.0.0/15 that are not the test hosts' subnet."""
    pools = [ipaddress.ip_network("198.19.0.0/16"), ipaddress.ip_network("198.18.128.0/17"),
             ipaddress.ip_network("198.18.96.0/19")]
    peers = []
    for pool in pools:
        for address in pool:
            if len(peers) == count:
                return peers
            peers.append(str(address))
    raise ValueError(f"no room for {count} peer prefixes")


def rule_set(size):
    """(peer, protocol, port) per rule for the client's egress and the server's ingress."""
    synthetic = max(0, size - len(MEASURED))
    peers = synthetic_peers(synthetic)
    rules = [(peer, "tcp", 1024 + i % 60000) for i, peer in enumerate(peers)]
    client = rules + [(SERVER_IP, proto, port) for proto, port in MEASURED]
    server = rules + [(CLIENT_IP, proto, port) for proto, port in MEASURED]
    return client, server


# ---------------------------------------------------------------------------------------------
# The hosts: namespaces, veth, cgroups, servers.

def cgroup2_mount():
    with open("/proc/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if fields[2] == "cgroup2":
                return fields[1]
    raise RuntimeError("no cgroup2 mount in /proc/mounts")


class Lab:
    def __init__(self, work):
        self.work = work
        self.cgroup = os.path.join(cgroup2_mount(), "microseg-cmp")
        self.processes = []

    def cgroup_of(self, side):
        return os.path.join(self.cgroup, f"{side}.service")

    def create_cgroups(self):
        for side in ("client", "server"):
            os.makedirs(self.cgroup_of(side), exist_ok=True)

    def remove_cgroups(self):
        for side in ("client", "server"):
            path = self.cgroup_of(side)
            if os.path.isdir(path):
                try:
                    with open(os.path.join(path, "cgroup.kill"), "w") as kill:
                        kill.write("1")
                except OSError:
                    pass
        for path in (self.cgroup_of("client"), self.cgroup_of("server"), self.cgroup):
            for _ in range(50):
                try:
                    if os.path.isdir(path):
                        os.rmdir(path)
                    break
                except OSError:
                    time.sleep(0.1)

    def cpu_usage_us(self):
        total = 0
        for side in ("client", "server"):
            with open(os.path.join(self.cgroup_of(side), "cpu.stat")) as stat:
                for line in stat:
                    if line.startswith("usage_usec"):
                        total += int(line.split()[1])
        return total

    def create_hosts(self):
        self.delete_hosts()
        run(["ip", "netns", "add", CLIENT_NS])
        run(["ip", "netns", "add", SERVER_NS])
        run(["ip", "-n", CLIENT_NS, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
             "netns", SERVER_NS])
        run(["ip", "-n", CLIENT_NS, "addr", "add", f"{CLIENT_IP}/24", "dev", "eth0"])
        run(["ip", "-n", SERVER_NS, "addr", "add", f"{SERVER_IP}/24", "dev", "eth0"])
        for ns in (CLIENT_NS, SERVER_NS):
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
            run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            run(in_ns(ns, ["sysctl", "-qw", "net.ipv4.ip_local_port_range=10000 65000"]))

    def delete_hosts(self):
        for ns in (CLIENT_NS, SERVER_NS):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def start(self, side, argv, stdout=subprocess.PIPE):
        """argv in the side's cgroup and namespace. The cgroup is joined before `ip netns exec`,
        which remounts /sys."""
        cgroup = self.cgroup_of(side)
        ns = CLIENT_NS if side == "client" else SERVER_NS

        def join_cgroup():
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as procs:
                procs.write(str(os.getpid()))

        process = subprocess.Popen(in_ns(ns, argv), stdout=stdout, stderr=subprocess.PIPE,
                                   text=True, preexec_fn=join_cgroup)
        self.processes.append(process)
        return process

    def run_in(self, side, argv, timeout):
        process = self.start(side, argv)
        out, err = process.communicate(timeout=timeout)
        self.processes.remove(process)
        if process.returncode != 0:
            raise RuntimeError(f"{argv[0]} in {side} failed: {err.strip()[:300]}")
        return out

    def stop(self, process):
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process in self.processes:
            self.processes.remove(process)

    def stop_all(self):
        for process in list(self.processes):
            self.stop(process)

    def await_line(self, process, text, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if text in line:
                return
            if process.poll() is not None:
                break
        raise RuntimeError(f"server did not print '{text}': {process.stderr.read()[:300]}")

    def start_servers(self):
        """The connection and bulk servers; the UDP receiver starts per measurement."""
        connect = self.start("server", [CONNECT_LOAD, "--serve", SERVER_IP, str(CONNECT_PORT), "2"])
        self.await_line(connect, "listening")
        bulk = self.start("server", ["iperf3", "-s", "-B", SERVER_IP, "-p", str(BULK_PORT)],
                          stdout=subprocess.DEVNULL)
        # iperf3 prints nothing useful until a client comes: wait for its socket instead.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            listening = run(in_ns(SERVER_NS, ["ss", "-Hltn", f"sport = :{BULK_PORT}"]))
            if listening.strip():
                return
            time.sleep(0.05)
        raise RuntimeError("iperf3 server did not listen")


# ---------------------------------------------------------------------------------------------
# Measures.

def measure_connect(lab, seconds):
    """Connection rate and latency, and the CPU time the client and server spent per
    connection: the scheduler's clock of their cgroups, which also counts the packet
    processing done in their context (softirqs on veth run in the sender's), and which work
    of other processes on the machine disturbs far less than it does the rate."""
    cpu_before = lab.cpu_usage_us()
    out = lab.run_in("client", [CONNECT_LOAD, SERVER_IP, str(CONNECT_PORT), str(seconds), "1"],
                     timeout=seconds + 60)
    cpu = lab.cpu_usage_us() - cpu_before
    result = json.loads(out)
    result["cpu_us_per_connection"] = cpu / max(1, result["connections"])
    return result


def measure_bulk(lab, seconds):
    out = lab.run_in("client", ["iperf3", "-c", SERVER_IP, "-p", str(BULK_PORT), "-t",
                                str(seconds), "-J"], timeout=seconds + 60)
    result = json.loads(out)
    return {"gbit_per_second": result["end"]["sum_received"]["bits_per_second"] / 1e9}


def measure_udp(lab, seconds):
    receiver = lab.start("server", [UDP_LOAD, "--serve", SERVER_IP, str(UDP_PORT), str(seconds)])
    lab.await_line(receiver, "listening")
    sent = json.loads(lab.run_in("client", [UDP_LOAD, SERVER_IP, str(UDP_PORT), str(seconds),
                                            "64"], timeout=seconds + 60))
    out, _ = receiver.communicate(timeout=seconds + 60)
    lab.processes.remove(receiver)
    received = json.loads(out.strip().splitlines()[-1])
    return {"received_per_second": received["received_per_second"],
            "sent_per_second": sent["sent_per_second"], "send_errors": sent["send_errors"]}


def measure_traffic(lab, seconds, variant=None):
    """The three traffic measures; `variant` may sample itself around the connection load."""
    if variant:
        variant.before_connect()
    connect = measure_connect(lab, seconds["connect"])
    if variant:
        variant.after_connect(seconds["connect"])
    return {"connect": connect, "bulk": measure_bulk(lab, seconds["bulk"]),
            "udp": measure_udp(lab, seconds["udp"])}


# ---------------------------------------------------------------------------------------------
# Variants. Each loads its rules for a size (timed), changes one rule (timed) and removes them.

class Variant:
    name = ""

    def __init__(self, lab, work):
        self.lab = lab
        self.work = work

    def load(self, size):
        """Installs the rules of `size` on both hosts; returns seconds taken."""
        raise NotImplementedError

    def change_one_rule(self):
        """Adds one rule on the server host; returns seconds taken."""
        raise NotImplementedError

    def unload(self):
        pass

    def before_connect(self):
        pass

    def after_connect(self, seconds):
        pass

    def extras(self):
        return {}


def iptables_rules(rules, chain, direction, match=None):
    """iptables-restore text: conntrack first, then one ACCEPT per rule, default DROP."""
    flag = "-s" if direction == "in" else "-d"
    policy = {name: "DROP" if name == chain else "ACCEPT" for name in ("INPUT", "OUTPUT")}
    lines = ["*filter", f":INPUT {policy['INPUT']} [0:0]", ":FORWARD DROP [0:0]",
             f":OUTPUT {policy['OUTPUT']} [0:0]",
             f"-A {chain} {'-i' if chain == 'INPUT' else '-o'} lo -j ACCEPT",
             f"-A {chain} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"]
    if match:
        lines.append(f"-A {chain} {match} -j ACCEPT")
    else:
        for peer, proto, port in rules:
            lines.append(f"-A {chain} {flag} {peer}/32 -p {proto} --dport {port} -j ACCEPT")
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


class IptablesLinear(Variant):
    def __init__(self, lab, work, backend):
        super().__init__(lab, work)
        self.backend = backend
        self.name = f"iptables-{backend}"

    def load(self, size):
        client, server = rule_set(size)
        restore = f"iptables-{self.backend}-restore"
        return (timed(in_ns(CLIENT_NS, [restore]), iptables_rules(client, "OUTPUT", "out")) +
                timed(in_ns(SERVER_NS, [restore]), iptables_rules(server, "INPUT", "in")))

    def change_one_rule(self):
        return timed(in_ns(SERVER_NS, [f"iptables-{self.backend}", "-A", "INPUT", "-s",
                                       "198.18.64.1/32", "-p", "tcp", "--dport", "9999", "-j",
                                       "ACCEPT"]))


class Ipset(Variant):
    name = "ipset"
    SET = "mseg-allowed"

    def load(self, size):
        client, server = rule_set(size)
        total = 0.0
        for ns, rules, chain, where in ((CLIENT_NS, client, "OUTPUT", "dst,dst"),
                                        (SERVER_NS, server, "INPUT", "src,dst")):
            lines = [f"create {self.SET} hash:ip,port family inet hashsize 65536 "
                     f"maxelem {max(65536, 2 * size)}"]
            lines += [f"add {self.SET} {peer},{proto}:{port}" for peer, proto, port in rules]
            total += timed(in_ns(ns, ["ipset", "restore"]), "\n".join(lines) + "\n")
            match = f"-m set --match-set {self.SET} {where}"
            total += timed(in_ns(ns, ["iptables-nft-restore"]),
                           iptables_rules(rules, chain, "in", match))
        return total

    def change_one_rule(self):
        return timed(in_ns(SERVER_NS, ["ipset", "add", self.SET, "198.18.64.1,tcp:9999"]))


def nft_ruleset(rules, hook, direction, as_set):
    address = "saddr" if direction == "in" else "daddr"
    lines = ["table ip mseg {"]
    if as_set:
        lines.append("  set allowed {")
        lines.append("    type ipv4_addr . inet_proto . inet_service")
        lines.append(f"    size {max(65536, 2 * len(rules))}")
        elements = ", ".join(f"{peer} . {proto} . {port}" for peer, proto, port in rules)
        lines.append(f"    elements = {{ {elements} }}")
        lines.append("  }")
    lines.append(f"  chain {hook} {{")
    lines.append(f"    type filter hook {hook} priority 0; policy drop;")
    lines.append(f"    {'iif' if hook == 'input' else 'oif'} lo accept")
    lines.append("    ct state established,related accept")
    if as_set:
        lines.append(f"    ip {address} . meta l4proto . th dport @allowed accept")
    else:
        for peer, proto, port in rules:
            lines.append(f"    ip {address} {peer} {proto} dport {port} accept")
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


class Nft(Variant):
    def __init__(self, lab, work, as_set):
        super().__init__(lab, work)
        self.as_set = as_set
        self.name = "nft-set" if as_set else "nft-linear"

    def load(self, size):
        client, server = rule_set(size)
        total = 0.0
        for ns, rules, hook, direction in ((CLIENT_NS, client, "output", "out"),
                                           (SERVER_NS, server, "input", "in")):
            path = os.path.join(self.work, f"{ns}.nft")
            with open(path, "w") as out:
                out.write(nft_ruleset(rules, hook, direction, self.as_set))
            total += timed(in_ns(ns, ["nft", "-f", path]))
        return total

    def change_one_rule(self):
        if self.as_set:
            argv = ["nft", "add", "element", "ip", "mseg", "allowed",
                    "{ 198.18.64.1 . tcp . 9999 }"]
        else:
            argv = ["nft", "add", "rule", "ip", "mseg", "input", "ip", "saddr", "198.18.64.1",
                    "tcp", "dport", "9999", "accept"]
        return timed(in_ns(SERVER_NS, argv))


# ---------------------------------------------------------------------------------------------
# microseg: one agent for both hosts, attached to the cgroup that holds their processes.

def microseg_policy(size):
    """The policy equivalent to `rule_set(size)`: N-3 egress rules of the client and N-3
    ingress rules of the server over N-3 peers, then the three measured rules, each of which
    covers the client's egress and the server's ingress. 2N-3 rules in all."""
    client, _ = rule_set(size)
    synthetic = client[:-len(MEASURED)]
    lines = ["version: 1", "workloads:",
             "  - {name: client, cgroup: client.service, labels: {role: client}}",
             "  - {name: server, cgroup: server.service, labels: {role: server}}",
             "inventory:",
             f"  - {{name: client-host, cidrs: [{CLIENT_IP}/32], labels: {{role: client}}}}",
             f"  - {{name: server-host, cidrs: [{SERVER_IP}/32], labels: {{role: server}}}}"]
    for i, (peer, _, _) in enumerate(synthetic):
        lines.append(f"  - {{name: peer-{i}, cidrs: [{peer}/32], labels: {{peer: p{i}}}}}")
    lines += ["segments:", "  - name: bench", "    rules:"]
    for i, (_, proto, port) in enumerate(synthetic):
        lines.append(f"      - {{name: out-{i}, from: {{role: client}}, to: {{peer: p{i}}}, "
                     f"protocol: {proto}, ports: [{port}]}}")
        lines.append(f"      - {{name: in-{i}, from: {{peer: p{i}}}, to: {{role: server}}, "
                     f"protocol: {proto}, ports: [{port}]}}")
    for proto, port in MEASURED:
        lines.append(f"      - {{name: measured-{proto}-{port}, from: {{role: client}}, "
                     f"to: {{role: server}}, protocol: {proto}, ports: [{port}]}}")
    return "\n".join(lines) + "\n"


BPF_ENABLE_STATS = 32
BPF_STATS_RUN_TIME = 0
SYS_BPF = 321  # x86_64


def enable_bpf_stats():
    """Turns on run time and count per BPF program for as long as the returned fd is open:
    the same counters as kernel.bpf_stats_enabled, without leaving the sysctl on if this
    script dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(8)
    fd = libc.syscall(SYS_BPF, BPF_ENABLE_STATS, attr, ctypes.c_uint(8))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "BPF_ENABLE_STATS")
    return fd


def program_stats(cgroup):
    """run_cnt and run_time_ns of each program attached to `cgroup`, by name."""
    attached = json.loads(run(["bpftool", "-j", "cgroup", "show", cgroup]))
    stats = {}
    for program in attached:
        info = json.loads(run(["bpftool", "-j", "prog", "show", "id", str(program["id"])]))
        stats[info["name"]] = {"run_cnt": info.get("run_cnt", 0),
                               "run_time_ns": info.get("run_time_ns", 0)}
    return stats


class Microseg(Variant):
    def __init__(self, lab, work, telemetry):
        super().__init__(lab, work)
        self.telemetry = telemetry
        self.name = "microseg-on" if telemetry else "microseg-off"
        self.agent = None
        self.state = os.path.join(work, "state")
        # A policy directory: the rules in bench.yaml, and a one-rule change is a new file
        # dropped beside it, as an operator adds a rule without touching the others.
        self.policy = os.path.join(work, "policy.d")
        self.log_path = os.path.join(work, "agent.log")
        self.size = 0
        self.sample = {}

    def write_policy(self, text, name="bench.yaml"):
        os.makedirs(self.policy, exist_ok=True)
        target = os.path.join(self.policy, name)
        temporary = os.path.join(self.policy, "." + name + ".new")  # ignored: starts with "."
        with open(temporary, "w") as out:
            out.write(text)
        os.rename(temporary, target)  # the agent reloads when a policy file is renamed in

    def policy_version(self):
        try:
            with open(os.path.join(self.state, "status.json")) as status:
                return json.load(status).get("policy_version", 0)
        except (OSError, ValueError):
            return 0

    def await_version(self, above, timeout=300):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.policy_version() > above:
                return
            if self.agent.poll() is not None:
                break
            time.sleep(0.001)
        raise RuntimeError(f"agent did not apply the policy: {self.tail_log()}")

    def tail_log(self):
        with open(self.log_path) as agent_log:
            return agent_log.read()[-1500:]

    def last_apply(self):
        """The *_ms figures of the agent's last "policy applied" line (took_ms, and the
        breakdown into reading, parsing, compiling and writing the kernel maps when logged)."""
        with open(self.log_path) as agent_log:
            found = [line for line in agent_log if "policy applied" in line]
        if not found:
            return {}
        return {key: float(value) for key, value in re.findall(r"(\w+_ms)=([0-9.]+)", found[-1])}

    def start_agent(self):
        subprocess.run([MICROSEGCTL, "uninstall", "--pin-dir", PIN_DIR], capture_output=True)
        shutil.rmtree(self.state, ignore_errors=True)
        shutil.rmtree(self.policy, ignore_errors=True)
        config = os.path.join(self.work, "agent.yaml")
        with open(config, "w") as out:
            out.write(f"telemetry: {'on' if self.telemetry else 'off'}\n")
            if self.telemetry:
                # Bounded disk use: records are still rendered and written as always.
                out.write("flow_log_max_bytes: 16777216\nflow_log_keep: 1\n")
        self.write_policy(microseg_policy(len(MEASURED)))
        self.agent = subprocess.Popen(
            [MICROSEGD, "--policy", self.policy, "--cgroup", self.lab.cgroup, "--pin-dir", PIN_DIR,
             "--state-dir", self.state, "--stats-interval", "0", "--config", config,
             "--control-socket", os.path.join(self.state, "control.sock")],
            stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT)
        self.await_version(0, timeout=60)

    def load(self, size):
        self.size = size
        self.start_agent()
        before = self.policy_version()
        started = time.monotonic()
        self.write_policy(microseg_policy(size))
        self.await_version(before)
        took = time.monotonic() - started
        self.sample["load_apply"] = self.last_apply()
        self.sample["rss_mib_loaded"] = self.rss_mib()
        return took

    def change_one_rule(self):
        # A file read within 100 ms of its last write is hashed again at the next load (its
        # stat cannot prove it unchanged); an operator's next change comes later than that.
        time.sleep(0.5)
        before = self.policy_version()
        started = time.monotonic()
        self.write_policy("version: 1\nsegments:\n  - name: extra\n    rules:\n"
                          "      - {name: extra, from: {role: client}, to: {role: server}, "
                          "protocol: tcp, ports: [9999]}\n", name="extra.yaml")
        self.await_version(before)
        took = time.monotonic() - started
        self.sample["change_apply"] = self.last_apply()
        return took

    def rss_mib(self):
        with open(f"/proc/{self.agent.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) / 1024
        return None

    def cpu_seconds(self):
        with open(f"/proc/{self.agent.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def before_connect(self):
        self.cpu_before = self.cpu_seconds()

    def after_connect(self, seconds):
        time.sleep(1.5)  # the agent drains the ring buffer and writes records once a second
        self.sample["agent_cpu_percent"] = 100 * (self.cpu_seconds() - self.cpu_before) / (
            seconds + 1.5)
        self.sample["rss_mib_under_load"] = self.rss_mib()

    def profile(self, seconds):
        """Run time per program and per connection during a connection load of its own."""
        fd = enable_bpf_stats()
        try:
            before = program_stats(self.lab.cgroup)
            connect = measure_connect(self.lab, seconds)
            after = program_stats(self.lab.cgroup)
        finally:
            os.close(fd)
        connections = max(1, connect["connections"])
        programs = {}
        for name, stats in after.items():
            runs = stats["run_cnt"] - before.get(name, {}).get("run_cnt", 0)
            ns = stats["run_time_ns"] - before.get(name, {}).get("run_time_ns", 0)
            if runs:
                programs[name] = {"runs_per_connection": round(runs / connections, 2),
                                  "ns_per_run": round(ns / runs, 1),
                                  "ns_per_connection": round(ns / connections, 1)}
        return {"connections_per_second": connect["connections_per_second"],
                "programs": programs,
                "ns_per_connection": round(sum(p["ns_per_connection"]
                                               for p in programs.values()), 1)}

    def counters(self):
        out = run([MICROSEGCTL, "counters", "--pin-dir", PIN_DIR])
        reasons = {}
        for line in out.splitlines():
            fields = line.split()
            if len(fields) == 2 and fields[1].isdigit():
                reasons[fields[0]] = int(fields[1])
        return reasons

    def unload(self):
        if self.agent is None:
            return
        if self.agent.poll() is None:
            self.agent.send_signal(signal.SIGTERM)
            self.agent.wait(timeout=30)
        with open(self.log_path) as agent_log:
            text = agent_log.read()
        for key in ("records_exported", "records_dropped"):
            found = re.findall(rf"{key}=([0-9]+)", text)
            if found:
                self.sample[key] = int(found[-1])
        self.agent = None
        subprocess.run([MICROSEGCTL, "uninstall", "--pin-dir", PIN_DIR], capture_output=True)

    def extras(self):
        return dict(self.sample)


class NoFilter(Variant):
    name = "no-filter"

    def load(self, size):
        return None

    def change_one_rule(self):
        return None


# ---------------------------------------------------------------------------------------------
# The run.

ENFORCEMENT_PROBE = f"""
import errno, socket
s = socket.socket()
s.settimeout(1)
try:
    s.connect(("{SERVER_IP}", 8002))
    print("open")
except ConnectionRefusedError:
    print("reached")
except (PermissionError, socket.timeout, OSError):
    print("blocked")
"""


def enforcement_probe(lab):
    """'blocked' when a port no rule allows is blocked; 'reached' when the SYN got through."""
    return lab.run_in("client", [sys.executable, "-c", ENFORCEMENT_PROBE], timeout=30).strip()


def make_variant(name, lab, work):
    directory = os.path.join(work, name)
    os.makedirs(directory, exist_ok=True)
    if name == "no-filter":
        return NoFilter(lab, directory)
    if name.startswith("microseg-"):
        return Microseg(lab, directory, telemetry=name == "microseg-on")
    if name.startswith("iptables-"):
        return IptablesLinear(lab, directory, name.split("-", 1)[1])
    if name == "ipset":
        return Ipset(lab, directory)
    if name.startswith("nft-"):
        return Nft(lab, directory, as_set=name == "nft-set")
    raise ValueError(f"unknown variant {name}; known: {', '.join(VARIANTS)}")


def run_variant(lab, variant, size, seconds):
    lab.create_hosts()
    lab.start_servers()
    row = {"variant": variant.name, "size": size}
    try:
        row["load_seconds"] = variant.load(size)
        row["enforcement"] = enforcement_probe(lab) if variant.name != "no-filter" else None
        if row["enforcement"] not in (None, "blocked"):
            raise RuntimeError(f"{variant.name} at {size} rules does not block an unlisted port")
        row.update(measure_traffic(lab, seconds, variant))
        row["change_seconds"] = variant.change_one_rule()
        if isinstance(variant, Microseg):
            row["bpf_profile"] = variant.profile(seconds["profile"])
            row["reasons"] = variant.counters()
    finally:
        lab.stop_all()
        variant.unload()
        lab.delete_hosts()
    row.update(variant.extras())
    return row


def add_ratios(rows, baseline):
    for row in rows:
        row["connect_ratio"] = row["connect"]["connections_per_second"] / baseline["connect"]
        row["bulk_ratio"] = row["bulk"]["gbit_per_second"] / baseline["bulk"]
        row["udp_ratio"] = row["udp"]["received_per_second"] / baseline["udp"]
        row["p50_over_no_filter_us"] = row["connect"]["connect_p50_us"] - baseline["p50"]
        row["cpu_ratio"] = row["connect"]["cpu_us_per_connection"] / baseline["cpu"]


def baseline_of(no_filter_rows):
    def mean(values):
        return sum(values) / len(values)
    return {"connect": mean([r["connect"]["connections_per_second"] for r in no_filter_rows]),
            "bulk": mean([r["bulk"]["gbit_per_second"] for r in no_filter_rows]),
            "udp": mean([r["udp"]["received_per_second"] for r in no_filter_rows]),
            "p50": mean([r["connect"]["connect_p50_us"] for r in no_filter_rows]),
            "cpu": mean([r["connect"]["cpu_us_per_connection"] for r in no_filter_rows])}


def fmt(value, spec, missing="-"):
    return missing if value is None else format(value, spec)


def print_table(rows, sizes):
    header = (f"{'variant':<26} {'conn/s':>8} {'x':>5} {'CPUus/c':>7} {'x':>5} {'p50us':>6} "
              f"{'p99us':>6} "
              f"{'Gbit/s':>6} {'x':>5} {'UDP kpps':>8} {'x':>5} {'load s':>7} {'1 rule ms':>9} "
              f"{'RSS MiB':>7} {'CPU%':>5}")
    for size in sizes:
        print(f"\n{size:,} rules and peer prefixes per host")
        print(header)
        for row in (r for r in rows if r["size"] == size):
            change = row.get("change_seconds")
            print(f"{LABELS[row['variant']]:<26} "
                  f"{row['connect']['connections_per_second']:>8,.0f} "
                  f"{row['connect_ratio']:>5.2f} {row['connect']['cpu_us_per_connection']:>7.1f} "
                  f"{row['cpu_ratio']:>5.2f} {row['connect']['connect_p50_us']:>6.1f} "
                  f"{row['connect']['connect_p99_us']:>6.1f} "
                  f"{row['bulk']['gbit_per_second']:>6.2f} {row['bulk_ratio']:>5.2f} "
                  f"{row['udp']['received_per_second'] / 1000:>8.0f} {row['udp_ratio']:>5.2f} "
                  f"{fmt(row.get('load_seconds'), '7.3f'):>7} "
                  f"{fmt(None if change is None else change * 1000, '9.1f'):>9} "
                  f"{fmt(row.get('rss_mib_under_load'), '7.0f'):>7} "
                  f"{fmt(row.get('agent_cpu_percent'), '5.0f'):>5}")


def goals(rows, sizes):
    """The issue's goals, each with the figure that decides it."""
    def row(variant, size):
        return next((r for r in rows if r["variant"] == variant and r["size"] == size), None)

    largest = max(sizes)
    verdicts = []

    def check(text, ok, figure):
        verdicts.append({"goal": text, "met": ok, "figure": figure})

    off, on = row("microseg-off", largest), row("microseg-on", largest)
    if off:
        check(f"connections >= 0.95x no filter at {largest:,} rules, telemetry off",
              off["connect_ratio"] >= 0.95, f"{off['connect_ratio']:.3f}x")
        check("connect() p50 <= no filter + 3 us (telemetry off)",
              off["p50_over_no_filter_us"] <= 3, f"+{off['p50_over_no_filter_us']:.1f} us")
        check("bulk throughput >= 0.98x (telemetry off)", off["bulk_ratio"] >= 0.98,
              f"{off['bulk_ratio']:.3f}x")
    if on:
        lost = on.get("reasons", {}).get("event_lost", 0) + on.get("records_dropped", 0)
        check(f"connections >= 0.85x no filter at {largest:,} rules, every flow recorded",
              on["connect_ratio"] >= 0.85 and lost == 0,
              f"{on['connect_ratio']:.3f}x, {lost} lost")
    for variant in ("microseg-off", "microseg-on"):
        for size in sizes:
            mine = row(variant, size)
            best = [r for r in (row("ipset", size), row("nft-set", size)) if r]
            if mine and best:
                # Ratios, each against its own neighbouring no-filter runs: absolute rates
                # measured minutes apart on a shared machine differ by more than the filters.
                rival = max(r["connect_ratio"] for r in best)
                check(f"{LABELS[variant]} connections >= best of ipset, nft set at {size:,}",
                      mine["connect_ratio"] >= rival,
                      f"{mine['connect_ratio']:.2f}x vs {rival:.2f}x")
    linear = [r for r in (row(v, largest) for v in ("iptables-legacy", "iptables-nft",
                                                    "nft-linear")) if r]
    if off and linear:
        fastest = min(r["load_seconds"] for r in linear)
        check(f"loading {largest:,} rules as fast as the fastest linear loader",
              off["load_seconds"] <= fastest, f"{off['load_seconds']:.2f} s vs {fastest:.2f} s")
        check("a one-rule change in at most 10 ms", off["change_seconds"] <= 0.010,
              f"{off['change_seconds'] * 1000:.1f} ms")
    return verdicts


def plot(rows, variants, out_dir):
    if not shutil.which("gnuplot"):
        log("gnuplot not found (scripts/install-deps.sh installs it): no plot")
        return None
    columns = []
    for variant in variants:
        path = os.path.join(out_dir, f"{variant}.dat")
        with open(path, "w") as data:
            for row in sorted((r for r in rows if r["variant"] == variant),
                              key=lambda r: r["size"]):
                change = row.get("change_seconds")
                data.write(f"{row['size']} {row['connect_ratio']:.4f} "
                           f"{row['connect']['connect_p50_us']:.2f} {row['bulk_ratio']:.4f} "
                           f"{row['udp_ratio']:.4f} {fmt(row.get('load_seconds'), '.4f', 'NaN')} "
                           f"{fmt(None if change is None else change * 1000, '.3f', 'NaN')}\n")
        columns.append((path, LABELS[variant]))
    panels = [(2, "connections/s vs no filter", "ratio", False),
              (3, "connect() p50", "microseconds", True),
              (4, "TCP bulk throughput vs no filter", "ratio", False),
              (5, "64-byte UDP datagrams/s vs no filter", "ratio", True),
              (6, "loading the rules (both hosts)", "seconds", True),
              (7, "changing one rule", "milliseconds", True)]
    png = os.path.join(out_dir, "compare.png")
    script = ["set terminal pngcairo size 1000,1040 font ',9'", f"set output '{png}'",
              "set multiplot layout 3,2 title 'microseg vs iptables, ipset, nftables "
              "(rules and peer prefixes per host)'",
              "set logscale x", "set xrange [5:200000]", "set format x '10^{%L}'",
              "set key bottom left font ',8'", "set grid", "set xlabel 'rules per host'"]
    script += [f"set style line {index + 1} linecolor {index + 1} pointtype {index + 1}"
               for index in range(len(columns))]
    for column, title, ylabel, logscale in panels:
        script.append(f"set title '{title}'")
        script.append(f"set ylabel '{ylabel}'")
        script.append("set logscale y" if logscale else "unset logscale y")
        script.append({3: "set key top right", 6: "set key top left",
                       7: "set key top left"}.get(column, "set key bottom left"))
        # No filter has nothing to load or change; each variant keeps its style everywhere.
        shown = list(enumerate(columns))[1:] if column in (6, 7) else list(enumerate(columns))
        plots = [f"'{path}' using 1:{column} with linespoints linestyle {index + 1} "
                 f"title '{label}'" for index, (path, label) in shown]
        script.append("plot " + ", ".join(plots))
    script.append("unset multiplot")
    run(["gnuplot"], input="\n".join(script) + "\n")
    return png


def machine():
    with open("/proc/cpuinfo") as cpuinfo:
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo
                      if line.startswith("model name")), "unknown")
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    return {"kernel": platform.release(), "cpus": os.cpu_count(), "cpu_model": model,
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
            "load_average_at_start": os.getloadavg(), "commit": commit,
            "date": datetime.datetime.now().isoformat(timespec="seconds")}


def parse_arguments():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="sizes 10 and 1,000 and short runs, for development")
    parser.add_argument("--sizes",
                        help="comma-separated rule counts (default 10,1000,10000,100000)")
    parser.add_argument("--seconds", type=float, help="seconds of each traffic measure")
    parser.add_argument("--variants", help=f"comma-separated subset of {','.join(VARIANTS)}")
    parser.add_argument("--report", metavar="JSON",
                        help="print the table, goals and plot of an earlier run's compare.json")
    parser.add_argument("--out", default=os.path.join(BUILD, "compare"),
                        help="directory for compare.json and compare.png (default build/compare)")
    args = parser.parse_args()
    sizes = ([int(s) for s in args.sizes.split(",")] if args.sizes
             else QUICK_SIZES if args.quick else FULL_SIZES)
    if any(size < len(MEASURED) for size in sizes):
        parser.error(f"every size must be at least {len(MEASURED)} (the measured rules)")
    variants = args.variants.split(",") if args.variants else VARIANTS
    for variant in variants:
        if variant not in VARIANTS:
            parser.error(f"unknown variant {variant}; known: {', '.join(VARIANTS)}")
    length = args.seconds or (2 if args.quick else 4)
    seconds = {"connect": length, "bulk": max(2, length * 0.75), "udp": max(2, length * 0.75),
               "profile": 2}
    return args, sizes, variants, seconds


def report(result, out_dir):
    rows, sizes = result["results"], result["sizes"]
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in rows)]
    png = plot(rows, ["no-filter"] + variants, out_dir)
    print(f"\nmicroseg vs iptables, ipset, nftables: {result['machine']['cpus']} CPUs, kernel "
          f"{result['machine']['kernel']}, commit {result['machine']['commit']}, "
          f"{result['elapsed_seconds']} s; x = ratio to no filter")
    print_table(rows, sizes)
    print("\ngoals")
    for verdict in goals(rows, sizes):
        print(f"  {'met    ' if verdict['met'] else 'MISSED '} {verdict['goal']}: "
              f"{verdict['figure']}")
    profiled = [r for r in rows if "bpf_profile" in r]
    if profiled:
        print("\nBPF run time per connection (ns), by program")
        for row in profiled:
            programs = ", ".join(f"{name} {p['ns_per_connection']:.0f} ({p['runs_per_connection']}"
                                 f" runs x {p['ns_per_run']:.0f})"
                                 for name, p in sorted(row["bpf_profile"]["programs"].items()))
            print(f"  {LABELS[row['variant']]:<24} {row['size']:>7,}: "
                  f"{row['bpf_profile']['ns_per_connection']:.0f} = {programs}")
    return png


def main():
    args, sizes, variants, seconds = parse_arguments()
    if args.report:
        with open(args.report) as saved:
            result = json.load(saved)
        os.makedirs(args.out, exist_ok=True)
        png = report(result, args.out)
        print(f"\nwrote {png}" if png else "")
        return
    if os.geteuid() != 0:
        sys.exit("bench/compare.py needs root: it creates namespaces, cgroups and BPF pins")
    for tool in (CONNECT_LOAD, UDP_LOAD, MICROSEGD, MICROSEGCTL):
        if not os.access(tool, os.X_OK):
            sys.exit(f"{tool} is missing: run scripts/build.sh first")
    for tool in ("iperf3", "iptables-legacy-restore", "iptables-nft-restore", "ipset", "nft",
                 "bpftool"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: run scripts/install-deps.sh first")
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="mseg-compare.")
    lab = Lab(work)
    # SIGTERM and SIGINT unwind through the finally below, which removes everything.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    rows = []
    started = time.monotonic()
    host = machine()
    try:
        lab.create_cgroups()
        for size in sizes:
            # No filter runs before and after every variant, which is judged against the mean
            # of its two neighbours: other work on the machine drifts over minutes.
            log(f"size {size:,}: no filter")
            no_filter = [run_variant(lab, make_variant("no-filter", lab, work), size, seconds)]
            size_rows = []
            for name in variants:
                log(f"size {size:,}: {LABELS[name]}, then no filter")
                size_rows.append(run_variant(lab, make_variant(name, lab, work), size, seconds))
                no_filter.append(run_variant(lab, make_variant("no-filter", lab, work), size,
                                             seconds))
                add_ratios([size_rows[-1]], baseline_of(no_filter[-2:]))
            baseline = baseline_of(no_filter)
            add_ratios(no_filter, baseline)
            no_filter_row = dict(no_filter[0])
            no_filter_row["runs"] = no_filter
            for key, figure in (("connections_per_second", baseline["connect"]),
                                ("connect_p50_us", baseline["p50"]),
                                ("cpu_us_per_connection", baseline["cpu"])):
                no_filter_row["connect"] = dict(no_filter_row["connect"], **{key: figure})
            no_filter_row["bulk"] = {"gbit_per_second": baseline["bulk"]}
            no_filter_row["udp"] = dict(no_filter_row["udp"], received_per_second=baseline["udp"])
            add_ratios([no_filter_row], baseline)
            rows += [no_filter_row] + size_rows
    finally:
        lab.stop_all()
        lab.delete_hosts()
        subprocess.run([MICROSEGCTL, "uninstall", "--pin-dir", PIN_DIR], capture_output=True)
        lab.remove_cgroups()
        shutil.rmtree(work, ignore_errors=True)

    result = {"machine": host, "seconds": seconds, "sizes": sizes,
              "elapsed_seconds": round(time.monotonic() - started), "results": rows,
              "goals": goals(rows, sizes)}
    json_path = os.path.join(args.out, "compare.json")
    with open(json_path, "w") as out:
        json.dump(result, out, indent=2)
    png = report(result, args.out)
    print(f"\nwrote {json_path}" + (f" and {png}" if png else ""))


if __name__ == "__main__":
    main()
