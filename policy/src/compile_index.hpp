// What the whole-policy compiler leaves behind for the change compiler (incremental.hpp).
// Internal to the policy library.
#pragma once

#include <array>
#include <memory>
#include <vector>

#include "compile_parts.hpp"
#include "mseg/policy/incremental.hpp"

namespace mseg::policy {

struct CompileIndex {
  std::shared_ptr<const Policy> policy;  // the specs below point into it
  std::vector<CompiledWorkload> workloads;  // as compiled, direction flags included
  size_t rule_count = 0;
  unsigned order_shift = 0;  // a base rule's place is its index << order_shift

  struct RuleRef {
    const SegmentSpec* segment = nullptr;
    const RuleSpec* rule = nullptr;
  };
  std::vector<RuleRef> rules;  // by rule index - kFirstRuleIndex

  detail::LabelIndex local_index;  // workloads that select something on this host
  detail::LabelIndex peer_index;

  // Per bucket: egress of each workload in id order, then ingress likewise. `raw` holds every
  // rule's entries sorted by key then rank; `resolved` what the kernel got, sorted by key.
  std::vector<std::vector<detail::RawEntry>> raw;
  std::vector<std::vector<detail::RawEntry>> resolved;

  // Per direction (Egress, Ingress) and workload slot: how many rules manage it, and how many
  // of those enforce (a direction is audit-only when none does).
  std::array<std::vector<uint32_t>, 2> managing;
  std::array<std::vector<uint32_t>, 2> enforcing;

  uint32_t orderOf(uint32_t rule_index) const { return rule_index << order_shift; }
};

}  // namespace mseg::policy
