#!/usr/bin/env python3
"""Writes a synthetic segment policy with N rules to stdout, for benchmarks.

Every rule allows one workload to reach one inventory peer on one TCP port, so N rules compile
to about 2N verdict entries (egress at the client, ingress at the server) over N/100 peers.

usage: gen_policy.py RULES
"""
import sys


def main() -> None:
    rules = int(sys.argv[1])
    peers = max(1, rules // 100)
    out = sys.stdout
    out.write("version: 1\nworkloads:\n")
    out.write("  - name: client\n    cgroup: client.service\n    labels: {role: client}\n")
    out.write("  - name: server\n    cgroup: server.service\n    labels: {role: server}\n")
    out.write("inventory:\n")
    out.write("  - name: client-host\n    cidrs: [198.18.90.1/32]\n    labels: {role: client}\n")
    for peer in range(peers):
        address = f"198.19.{peer // 250}.{peer % 250 + 1}/32"
        out.write(f"  - name: peer-{peer}\n    cidrs: [{address}]\n")
        out.write(f"    labels: {{role: server, peer: p{peer}}}\n")
    out.write("segments:\n  - name: bench\n    rules:\n")
    for rule in range(rules):
        port = 1024 + rule % 60000
        out.write(f"      - name: r{rule}\n        from: {{role: client}}\n")
        out.write(f"        to: {{peer: p{rule % peers}}}\n        protocol: tcp\n")
        out.write(f"        ports: [{port}]\n")


if __name__ == "__main__":
    main()
