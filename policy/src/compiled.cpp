// The userspace model of the kernel's verdict lookup, for `microsegctl policy trace` and tests.
// It scans every entry, which is fine for one trace and keeps it independent of entry order;
// it is not meant for per-packet use.
#include "mseg/policy/compiled.hpp"

#include <fnmatch.h>

#include <algorithm>
#include <string>

#include "mseg/policy/address.hpp"
#include "mseg/policy/compiler.hpp"

namespace mseg::policy {
namespace {

struct Match {
  bool found = false;
  int length = -1;  // how long the matched key is: protocol Any < port prefix 0 < ... < 16
  Verdict verdict = Verdict::None;
  uint32_t rule_index = kRuleNone;
};

bool samePortBlock(uint16_t a, uint16_t b, uint8_t prefix_len) {
  if (prefix_len == 0) {
    return true;
  }
  uint32_t mask = 0xffffu << (16 - std::min<uint8_t>(prefix_len, 16));
  return (a & mask) == (b & mask);
}

// The longest match in the trie of (direction, workload, peer), as BPF_MAP_TYPE_LPM_TRIE finds
// it: exact port, then each shorter port prefix, then any port, then protocol Any. `entries`
// must all belong to that one trie.
Match longestMatch(const std::vector<const VerdictEntry*>& entries, Protocol protocol,
                   uint16_t port) {
  Match best;
  for (const VerdictEntry* entry : entries) {
    int length = -1;
    if (entry->protocol == Protocol::Any) {
      length = 0;
    } else if (entry->protocol == protocol &&
               samePortBlock(entry->port, port, entry->port_prefix_len)) {
      length = 1 + entry->port_prefix_len;
    }
    if (length > best.length) {
      best = {true, length, entry->verdict, entry->rule_index};
    }
  }
  return best;
}

std::vector<const VerdictEntry*> entriesOf(const CompiledPolicy& policy, Direction direction,
                                           uint32_t workload_id, uint32_t peer_id) {
  std::vector<const VerdictEntry*> found;
  for (const auto& entry : policy.entries) {
    if (entry.direction == direction && entry.workload_id == workload_id &&
        entry.peer_id == peer_id) {
      found.push_back(&entry);
    }
  }
  return found;
}

bool matchesCgroupPattern(const CompiledWorkload& workload, const std::string& path) {
  return std::any_of(workload.cgroup_patterns.begin(), workload.cgroup_patterns.end(),
                     [&](const std::string& pattern) {
                       return fnmatch(pattern.c_str(), path.c_str(), FNM_PATHNAME) == 0;
                     });
}

}  // namespace

// As bpf/lib/policy.bpf.h: an unmanaged direction is not judged at all; a managed one takes
// the higher verdict of the exact peer and the `any` peer (the exact peer's rule on a tie,
// since it is looked up first), and without a match its default deny.
Decision decideAmong(const CompiledWorkload& workload, Direction direction,
                     const std::vector<const VerdictEntry*>& exact_peer,
                     const std::vector<const VerdictEntry*>& any_peer, Protocol protocol,
                     uint16_t port) {
  bool egress = direction == Direction::Egress;
  if (!(egress ? workload.egress_managed : workload.ingress_managed)) {
    return {};
  }

  Match exact = longestMatch(exact_peer, protocol, port);
  Match any = longestMatch(any_peer, protocol, port);
  if (exact.found && (!any.found || exact.verdict >= any.verdict)) {
    return {exact.verdict, exact.rule_index};
  }
  if (any.found) {
    return {any.verdict, any.rule_index};
  }

  bool audit = egress ? workload.egress_audit : workload.ingress_audit;
  return {audit ? Verdict::Audit : Verdict::Deny, kRuleDefaultDeny};
}

Decision decide(const CompiledPolicy& policy, Direction direction, uint32_t workload_id,
                uint32_t peer_id, Protocol protocol, uint16_t port) {
  auto workload = std::find_if(policy.workloads.begin(), policy.workloads.end(),
                               [&](const CompiledWorkload& w) { return w.id == workload_id; });
  if (workload == policy.workloads.end()) {
    return {};
  }
  auto exact = entriesOf(policy, direction, workload_id, peer_id);
  std::vector<const VerdictEntry*> any;
  if (peer_id != kPeerAny) {
    any = entriesOf(policy, direction, workload_id, kPeerAny);
  }
  return decideAmong(*workload, direction, exact, any, protocol, port);
}

uint32_t peerIdentityOf(const CompiledPolicy& policy, const std::array<uint8_t, 16>& address) {
  uint32_t peer = kPeerWorld;
  int longest = -1;
  for (const auto& prefix : policy.prefixes) {
    if (prefix.prefix_len > longest && cidrContains({prefix.address, prefix.prefix_len}, address)) {
      peer = prefix.peer_id;
      longest = prefix.prefix_len;
    }
  }
  return peer;
}

bool workloadSelects(const CompiledWorkload& workload, std::string_view cgroup_path, uint32_t uid) {
  if (workload.uids.empty() && !workload.unresolved_users.empty()) {
    return false;
  }
  if (!workload.uids.empty() &&
      std::find(workload.uids.begin(), workload.uids.end(), uid) == workload.uids.end()) {
    return false;
  }
  if (workload.cgroup_patterns.empty()) {
    return true;
  }

  return matchesCgroupPattern(workload, std::string(cgroup_path));
}

const CompiledWorkload* workloadOfCgroup(const CompiledPolicy& policy,
                                         std::string_view cgroup_path) {
  const std::string path(cgroup_path);
  for (const auto& workload : policy.workloads) {
    if (matchesCgroupPattern(workload, path)) {
      return &workload;
    }
  }
  return nullptr;
}

}  // namespace mseg::policy
