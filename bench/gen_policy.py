#!/usr/bin/env python3
"""Writes a synthetic segment policy with N rules, for benchmarks.

Every rule allows one workload to reach one inventory peer on one TCP port, so N rules compile
to about 2N verdict entries (egress at the client, ingress at the server) over N/100 peers.

usage: gen_policy.py RULES                  one file, to stdout
       gen_policy.py RULES --files K DIR    a policy directory: DIR/00-hosts.yaml with the
                                            workloads and inventory, and K files of one
                                            segment each holding RULES/K rules
"""
import os
import sys


def header(out, rules: int) -> None:
    peers = max(1, rules // 100)
    out.write("version: 1\nworkloads:\n")
    out.write("  - name: client\n    cgroup: client.service\n    labels: {role: client}\n")
    out.write("  - name: server\n    cgroup: server.service\n    labels: {role: server}\n")
    out.write("inventory:\n")
    out.write("  - name: client-host\n    cidrs: [198.18.90.1/32]\n    labels: {role: client}\n")
    for peer in range(peers):
        address = f"198.19.{peer // 250}.{peer % 250 + 1}/32"
        out.write(f"  - name: peer-{peer}\n    cidrs: [{address}]\n")
        out.write(f"    labels: {{role: server, peer: p{peer}}}\n")


def segment(out, name: str, first: int, count: int, peers: int) -> None:
    out.write(f"  - name: {name}\n    rules:\n")
    for rule in range(first, first + count):
        port = 1024 + rule % 60000
        out.write(f"      - name: r{rule}\n        from: {{role: client}}\n")
        out.write(f"        to: {{peer: p{rule % peers}}}\n        protocol: tcp\n")
        out.write(f"        ports: [{port}]\n")


def main() -> None:
    rules = int(sys.argv[1])
    peers = max(1, rules // 100)
    if len(sys.argv) == 2:
        header(sys.stdout, rules)
        sys.stdout.write("segments:\n")
        segment(sys.stdout, "bench", 0, rules, peers)
        return
    if len(sys.argv) != 5 or sys.argv[2] != "--files":
        sys.exit(__doc__)
    files, directory = int(sys.argv[3]), sys.argv[4]
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "00-hosts.yaml"), "w") as out:
        header(out, rules)
    per_file = max(1, rules // files)
    for index, first in enumerate(range(0, rules, per_file)):
        with open(os.path.join(directory, f"rules-{index:04d}.yaml"), "w") as out:
            out.write("version: 1\nsegments:\n")
            segment(out, f"bench-{index:04d}", first, min(per_file, rules - first), peers)


if __name__ == "__main__":
    main()
