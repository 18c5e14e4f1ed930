#!/usr/bin/env bash
# Installs what microseg needs to build, test and run its lab on Debian 12. Idempotent.
set -euo pipefail

packages=(
  # build
  cmake g++ pkg-config clang llvm bpftool libbpf-dev libelf-dev zlib1g-dev
  libspdlog-dev libfmt-dev libyaml-dev libssl-dev libsystemd-dev nlohmann-json3-dev rapidjson-dev
  libprotobuf-dev protobuf-compiler libgrpc++-dev protobuf-compiler-grpc
  libgtest-dev libgmock-dev libmicrohttpd-dev
  # the Debian package: man pages from --help, shared library dependencies, unit verification
  help2man dpkg-dev systemd man-db adduser
  # lab and integration tests: real servers and clients in network namespaces
  iproute2 iputils-ping procps postgresql postgresql-client nginx-light curl python3
  socat iperf3 nmap openssl rsyslog rsyslog-gnutls util-linux prometheus
  # bench/compare.py: the firewalls microseg is compared with, and its plot
  iptables ipset nftables gnuplot-nox
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
    missing+=("$package")
done
if ((${#missing[@]} > 0)); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The Debian packages of postgresql and nginx try to start their services; this machine has
  # no init to start them and the lab starts its own instances, so refuse service starts.
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi
