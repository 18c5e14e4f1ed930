// `policy trace`: the verdict the kernel would give one connection, and the rule that decides
// it, from a compiled policy (the running one, in the agent).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "mseg/policy/address.hpp"
#include "mseg/policy/compiled.hpp"
#include "mseg/result.hpp"

namespace mseg::policy {

struct TraceQuery {
  std::string from;  // a workload name or an IP address
  std::string to;
  Protocol protocol = Protocol::Tcp;  // Tcp, Udp, Icmp or Icmpv6
  std::optional<uint16_t> port;       // required for TCP and UDP; ICMP: the type
};

struct TraceResult {
  Decision decision;  // verdict None: the workload is not managed in this direction
  Direction direction = Direction::Egress;
  const CompiledWorkload* workload = nullptr;  // points into the policy traced
  uint32_t peer_id = kPeerWorld;
  std::string peer;  // the inventory entry covering the address, or "world"
  Address address{};
  Protocol protocol = Protocol::Tcp;  // ICMP toward an IPv6 address becomes ICMPv6
  uint16_t port = 0;
  std::string rule;           // the deciding rule, "(default deny)", or empty when unmanaged
  std::string rule_location;  // file:line:column of the rule
};

// Exactly one of `from` and `to` must name a workload of `policy`; the other is the peer's
// address. From a workload is its egress, to a workload its ingress. ICMP without a type traces
// an echo request. Fails with ENOENT for a name that is neither an address nor a workload (the
// message lists the workloads), and with EINVAL for two workloads, two addresses, or a missing
// or out-of-range port, saying what to give instead. Thread-safe for a policy nobody modifies.
Result<TraceResult> tracePath(const CompiledPolicy& policy, const TraceQuery& query);

// The workload called `name`; fails with ENOENT and a message listing the workloads there are.
Result<const CompiledWorkload*> findWorkload(const CompiledPolicy& policy, const std::string& name);

}  // namespace mseg::policy
