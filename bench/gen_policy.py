#!/usr/bin/env python3
"""Writes a synthetic segment policy with N rules, for benchmarks.

Every rule allows one workload to reach one inventory peer on one TCP port, so N rules compile
to about 2N verdict entries (egress at the client, ingress at the server) over N/100 peers.

usage: gen_policy.py RULES [--port-base P]                 one file, to stdout
       gen_policy.py RULES --files K DIR [--port-base P]    a policy directory:
           DIR/00-hosts.yaml with the workloads and inventory, and K files of one segment
           each holding RULES/K rules
--port-base (default 1024) moves every rule's port, which makes every rule different.
"""
import argparse
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


def segment(out, name: str, first: int, count: int, peers: int, port_base: int) -> None:
    out.write(f"  - name: {name}\n    rules:\n")
    for rule in range(first, first + count):
        port = port_base + rule % 60000
        out.write(f"      - name: r{rule}\n        from: {{role: client}}\n")
        out.write(f"        to: {{peer: p{rule % peers}}}\n        protocol: tcp\n")
        out.write(f"        ports: [{port}]\n")


def main() -> None:
    parser = argparse.ArgumentParser(usage=__doc__)
    parser.add_argument("rules", type=int)
    parser.add_argument("--files", type=int)
    parser.add_argument("directory", nargs="?")
    parser.add_argument("--port-base", type=int, default=1024)
    args = parser.parse_intermixed_args()
    peers = max(1, args.rules // 100)
    if args.files is None:
        header(sys.stdout, args.rules)
        sys.stdout.write("segments:\n")
        segment(sys.stdout, "bench", 0, args.rules, peers, args.port_base)
        return
    if args.directory is None:
        sys.exit(__doc__)
    os.makedirs(args.directory, exist_ok=True)
    with open(os.path.join(args.directory, "00-hosts.yaml"), "w") as out:
        header(out, args.rules)
    per_file = max(1, args.rules // args.files)
    for index, first in enumerate(range(0, args.rules, per_file)):
        with open(os.path.join(args.directory, f"rules-{index:04d}.yaml"), "w") as out:
            out.write("version: 1\nsegments:\n")
            segment(out, f"bench-{index:04d}", first, min(per_file, args.rules - first), peers,
                    args.port_base)


if __name__ == "__main__":
    main()
