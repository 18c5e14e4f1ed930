#include "mseg/policy/trace.hpp"

#include <algorithm>
#include <variant>

#include <fmt/format.h>

namespace mseg::policy {
namespace {

constexpr uint16_t kIcmpEchoRequest = 8;
constexpr uint16_t kIcmpv6EchoRequest = 128;

std::string knownWorkloads(const CompiledPolicy& policy) {
  std::vector<std::string> names;
  for (const auto& workload : policy.workloads) {
    names.push_back(workload.name);
  }
  return names.empty() ? "no workloads" : fmt::format("{}", fmt::join(names, ", "));
}

// An end of the path: a workload of the policy or an address.
using End = std::variant<const CompiledWorkload*, Address>;

Result<End> resolveEnd(const CompiledPolicy& policy, const std::string& text) {
  if (auto address = parseAddress(text)) {
    return End(*address);
  }
  auto workload = findWorkload(policy, text);
  if (!workload) {
    return Error(ENOENT, workload.error().message() + "; or give an IP address");
  }
  return End(*workload);
}

// The inventory entries that carry exactly the labels of `workload`, as a hint of the address
// to trace toward when the operator named two workloads.
std::string addressHint(const CompiledPolicy& policy, const CompiledWorkload& workload) {
  for (const auto& peer : policy.peers) {
    if (peer.labels != workload.labels) {
      continue;
    }
    for (const auto& prefix : policy.prefixes) {
      if (prefix.peer_id == peer.id) {
        return fmt::format(" (inventory entry `{}` has the labels of `{}`: {})", peer.name,
                           workload.name, formatCidr({prefix.address, prefix.prefix_len}));
      }
    }
  }
  return "";
}

std::string peerName(const CompiledPolicy& policy, uint32_t peer_id) {
  for (const auto& peer : policy.peers) {
    if (peer.id == peer_id) {
      return peer.name;
    }
  }
  return "world";
}

Result<uint16_t> portOf(const TraceQuery& query, Protocol protocol) {
  if (protocol == Protocol::Tcp || protocol == Protocol::Udp) {
    if (!query.port) {
      return Error::invalid("--port is required for tcp and udp");
    }
    return *query.port;
  }
  if (query.port && *query.port > 255) {
    return Error::invalid(
        fmt::format("--port {} for icmp is the ICMP type, from 0 to 255", *query.port));
  }
  return query.port.value_or(protocol == Protocol::Icmp ? kIcmpEchoRequest : kIcmpv6EchoRequest);
}

}  // namespace

Result<const CompiledWorkload*> findWorkload(const CompiledPolicy& policy,
                                             const std::string& name) {
  for (const auto& workload : policy.workloads) {
    if (workload.name == name) {
      return &workload;
    }
  }
  return Error(ENOENT, fmt::format("unknown workload `{}`: the running policy defines {}", name,
                                   knownWorkloads(policy)));
}

Result<TraceResult> tracePath(const CompiledPolicy& policy, const TraceQuery& query) {
  auto from = resolveEnd(policy, query.from);
  if (!from) {
    return from.error();
  }
  auto to = resolveEnd(policy, query.to);
  if (!to) {
    return to.error();
  }
  const bool from_workload = std::holds_alternative<const CompiledWorkload*>(*from);
  const bool to_workload = std::holds_alternative<const CompiledWorkload*>(*to);
  if (from_workload && to_workload) {
    return Error::invalid(fmt::format(
        "--from `{}` and --to `{}` are both workloads: the kernel judges a connection by the "
        "peer's address, so give one end as an address{}",
        query.from, query.to,
        addressHint(policy, *std::get<const CompiledWorkload*>(*to))));
  }
  if (!from_workload && !to_workload) {
    return Error::invalid(fmt::format(
        "neither `{}` nor `{}` is a workload: the agent judges only its own workloads' "
        "traffic; name one end by workload ({})",
        query.from, query.to, knownWorkloads(policy)));
  }

  TraceResult result;
  result.direction = from_workload ? Direction::Egress : Direction::Ingress;
  result.workload = std::get<const CompiledWorkload*>(from_workload ? *from : *to);
  result.address = std::get<Address>(from_workload ? *to : *from);
  result.protocol = query.protocol;
  if (result.protocol == Protocol::Icmp && !isIpv4Mapped(result.address)) {
    result.protocol = Protocol::Icmpv6;
  }
  auto port = portOf(query, result.protocol);
  if (!port) {
    return port.error();
  }
  result.port = *port;
  result.peer_id = peerIdentityOf(policy, result.address);
  result.peer = peerName(policy, result.peer_id);

  result.decision = decide(policy, result.direction, result.workload->id, result.peer_id,
                           result.protocol, result.port);
  if (result.decision.rule_index == kRuleDefaultDeny) {
    result.rule = "(default deny)";
  } else if (result.decision.rule_index >= kFirstRuleIndex) {
    const CompiledRule& rule = policy.rules.at(result.decision.rule_index - kFirstRuleIndex);
    result.rule = rule.name;
    result.rule_location = rule.where;
  }
  return result;
}

}  // namespace mseg::policy
