#include "kernel_state.hpp"

#include <arpa/inet.h>

#include <set>

#include "mseg/policy/compiler.hpp"

namespace mseg::agent {
namespace {

uint32_t workloadFlags(const policy::CompiledWorkload& workload) {
  uint32_t flags = 0;
  if (workload.egress_managed) {
    flags |= MSEG_WL_EGRESS_MANAGED;
  }
  if (workload.ingress_managed) {
    flags |= MSEG_WL_INGRESS_MANAGED;
  }
  if (workload.egress_audit) {
    flags |= MSEG_WL_EGRESS_AUDIT;
  }
  if (workload.ingress_audit) {
    flags |= MSEG_WL_INGRESS_AUDIT;
  }
  return flags;
}

// The uids a workload's keys carry: its resolved users, or "any" when it names none. A
// workload whose every user is unknown here selects nobody on this host.
std::vector<uint32_t> keyUids(const policy::CompiledWorkload& workload) {
  if (!workload.uids.empty()) {
    return workload.uids;
  }
  if (!workload.unresolved_users.empty()) {
    return {};
  }
  return {MSEG_UID_ANY};
}

void addWorkloadKeys(BankContent& bank, uint64_t cgroup_id,
                     const policy::CompiledWorkload& workload) {
  mseg_workload value{};
  value.id = workload.id;
  value.flags = workloadFlags(workload);
  for (uint32_t uid : keyUids(workload)) {
    mseg_workload_key key{};
    key.cgroup_id = cgroup_id;
    key.uid = uid;
    bank.workloads.emplace(key, value);  // first definition wins
  }
}

uint32_t prefixLength(const policy::VerdictEntry& entry) {
  if (entry.protocol == policy::Protocol::Any) {
    return MSEG_VERDICT_PREFIX_ANY_PROTO;
  }
  return MSEG_VERDICT_PREFIX_ANY_PORT + entry.port_prefix_len;
}

mseg_verdict_key verdictKey(const policy::VerdictEntry& entry) {
  mseg_verdict_key key{};
  key.prefixlen = prefixLength(entry);
  key.workload_id = entry.workload_id;
  key.peer_id = entry.peer_id;
  key.direction = static_cast<uint8_t>(entry.direction);
  key.protocol = static_cast<uint8_t>(entry.protocol);
  if (entry.protocol != policy::Protocol::Any) {
    uint16_t mask = entry.port_prefix_len == 0
                        ? 0
                        : static_cast<uint16_t>(0xffffu << (16 - entry.port_prefix_len));
    key.port = htons(entry.port & mask);  // the trie ignores bits past the prefix; keep them 0
  }
  return key;
}

bool isPortEntry(const policy::VerdictEntry& entry) {
  return entry.protocol != policy::Protocol::Any && entry.port_prefix_len == 16;
}

mseg_port_verdict_key portVerdictKey(const policy::VerdictEntry& entry) {
  mseg_port_verdict_key key{};
  key.workload_id = entry.workload_id;
  key.peer_id = entry.peer_id;
  key.direction = static_cast<uint8_t>(entry.direction);
  key.protocol = static_cast<uint8_t>(entry.protocol);
  key.port = htons(entry.port);
  return key;
}

}  // namespace

void RuleIds::adopt(const std::map<uint32_t, std::string>& existing) {
  id_of_name_.clear();
  for (const auto& [id, name] : existing) {
    id_of_name_.emplace(name, id);
  }
  const uint32_t after_last = existing.empty() ? 0 : existing.rbegin()->first + 1;
  next_id_ = std::max<uint32_t>(MSEG_FIRST_RULE_ID, after_last);
}

// Runs on every reload of policies with 100,000 rules: one lookup per rule, no name copied
// unless it is new. Names a policy drops are remembered, so a rule that comes back (a policy
// rolled back, a rule commented out for a while) gets its id and its counters back instead of
// using up a new id.
std::vector<uint32_t> RuleIds::assign(const policy::CompiledPolicy& policy) {
  std::vector<uint32_t> ids(policy::kFirstRuleIndex + policy.rules.size(), MSEG_RULE_NONE);
  ids[policy::kRuleDefaultDeny] = MSEG_RULE_DEFAULT_DENY;
  for (const auto& rule : policy.rules) {
    auto known = id_of_name_.find(std::string_view(rule.name));
    if (known != id_of_name_.end()) {
      ids[rule.index] = known->second;
    } else if (next_id_ < MSEG_MAX_RULES) {
      // LIMITATION: ids are not reused within one pin directory's life; after MSEG_MAX_RULES
      // distinct rule names the counters of new rules are not kept (the verdicts still are).
      ids[rule.index] = next_id_;
      id_of_name_.emplace(rule.name, next_id_++);
    }
  }
  return ids;
}

uint32_t RuleIds::idOf(const std::string& name) {
  auto known = id_of_name_.find(std::string_view(name));
  if (known != id_of_name_.end()) {
    return known->second;
  }
  if (next_id_ >= MSEG_MAX_RULES) {
    return MSEG_RULE_NONE;  // see assign()
  }
  id_of_name_.emplace(name, next_id_);
  return next_id_++;
}

std::vector<WorkloadBinding> bindWorkloads(const policy::CompiledPolicy& policy,
                                           const std::vector<CgroupEntry>& cgroups) {
  std::vector<WorkloadBinding> bindings;
  for (const auto& cgroup : cgroups) {
    if (const auto* workload = policy::workloadOfCgroup(policy, cgroup.relative_path)) {
      bindings.push_back({cgroup.id, cgroup.relative_path, workload->id});
    }
  }
  return bindings;
}

namespace {

void addAllWorkloadKeys(BankContent& bank, const std::vector<policy::CompiledWorkload>& workloads,
                        const std::vector<WorkloadBinding>& bindings) {
  std::unordered_map<uint32_t, const policy::CompiledWorkload*> workload_of_id;
  for (const auto& workload : workloads) {
    workload_of_id[workload.id] = &workload;
    if (workload.cgroup_patterns.empty()) {
      addWorkloadKeys(bank, 0, workload);  // selected by user alone, in any cgroup
    }
  }
  for (const auto& binding : bindings) {
    addWorkloadKeys(bank, binding.cgroup_id, *workload_of_id.at(binding.workload_id));
  }
}

}  // namespace

BankContent buildBank(const policy::CompiledPolicy& policy,
                      const std::vector<WorkloadBinding>& bindings,
                      const std::vector<uint32_t>& rule_ids) {
  BankContent bank;
  addAllWorkloadKeys(bank, policy.workloads, bindings);

  for (const auto& prefix : policy.prefixes) {
    mseg_peer_key key{};
    key.prefixlen = prefix.prefix_len;
    std::memcpy(key.addr, prefix.address.data(), sizeof(key.addr));
    bank.peers[key] = mseg_peer{prefix.peer_id};
  }

  for (const auto& entry : policy.entries) {
    mseg_verdict_value value{};
    value.verdict = static_cast<uint8_t>(entry.verdict);
    value.rule_id = entry.rule_index < rule_ids.size() ? rule_ids[entry.rule_index]
                                                       : MSEG_RULE_NONE;
    if (isPortEntry(entry)) {
      bank.port_verdicts[portVerdictKey(entry)] = value;
    } else {
      bank.verdicts[verdictKey(entry)] = value;
    }
  }
  return bank;
}

BankDelta buildBankDelta(const policy::CompiledChange& change,
                         const std::vector<policy::CompiledWorkload>& base_workloads,
                         const std::vector<WorkloadBinding>& bindings,
                         const std::vector<uint32_t>& base_rule_ids,
                         const std::map<uint32_t, uint32_t>& added_rule_ids) {
  BankDelta delta;
  for (const auto& entry : change.removed) {
    if (isPortEntry(entry)) {
      delta.port_verdicts.removals.push_back(portVerdictKey(entry));
    } else {
      delta.verdicts.removals.push_back(verdictKey(entry));
    }
  }
  for (const auto& entry : change.upserted) {
    mseg_verdict_value value{};
    value.verdict = static_cast<uint8_t>(entry.verdict);
    if (auto added = added_rule_ids.find(entry.rule_index); added != added_rule_ids.end()) {
      value.rule_id = added->second;
    } else if (entry.rule_index < base_rule_ids.size()) {
      value.rule_id = base_rule_ids[entry.rule_index];
    }
    if (isPortEntry(entry)) {
      delta.port_verdicts.upsert(portVerdictKey(entry), value);
    } else {
      delta.verdicts.upsert(verdictKey(entry), value);
    }
  }

  // A workload whose managed directions changed keeps its keys, and their flags change. The
  // keys are those it wins when all workloads claim theirs in policy order, as in buildBank.
  if (change.changed_workloads.empty()) {
    return delta;
  }
  std::vector<policy::CompiledWorkload> workloads = base_workloads;
  std::set<uint32_t> changed;
  for (const auto& workload : change.changed_workloads) {
    workloads.at(workload.id - policy::kFirstWorkloadIdentity) = workload;
    changed.insert(workload.id);
  }
  BankContent keys;
  addAllWorkloadKeys(keys, workloads, bindings);
  for (const auto& [key, value] : keys.workloads) {
    if (changed.count(value.id) != 0) {
      delta.workloads.upsert(key, value);
    }
  }
  return delta;
}

}  // namespace mseg::agent
