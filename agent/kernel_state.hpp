// The desired content of one policy bank: what the kernel's workload, inventory and verdict
// maps must hold for a compiled policy and the cgroups that exist now. Pure computation, no
// kernel access, so it is unit-tested without root.
#pragma once

#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cgroups.hpp"
#include "mseg/abi.h"
#include "mseg/policy/compiled.hpp"
#include "mseg/policy/incremental.hpp"

namespace mseg::agent {

// Hash and equality over the raw bytes of an ABI struct. Sound because ABI structs have no
// implicit padding and we zero explicit padding.
template <typename T>
struct BytesHash {
  size_t operator()(const T& value) const {
    return std::hash<std::string_view>{}(
        std::string_view(reinterpret_cast<const char*>(&value), sizeof(T)));
  }
};
template <typename T>
struct BytesEqual {
  bool operator()(const T& a, const T& b) const { return std::memcmp(&a, &b, sizeof(T)) == 0; }
};
template <typename K, typename V>
using MapContent = std::unordered_map<K, V, BytesHash<K>, BytesEqual<K>>;

struct BankContent {
  MapContent<mseg_workload_key, mseg_workload> workloads;
  MapContent<mseg_peer_key, mseg_peer> peers;
  MapContent<mseg_verdict_key, mseg_verdict_value> verdicts;  // any protocol/port, ranges
  MapContent<mseg_port_verdict_key, mseg_verdict_value> port_verdicts;  // one port each

  size_t verdictEntries() const { return verdicts.size() + port_verdicts.size(); }
};

// Entries to write into, and keys to delete from, one map of a bank.
template <typename K, typename V>
struct MapDelta {
  std::vector<K> upsert_keys;
  std::vector<V> upsert_values;  // one per upsert key
  std::vector<K> removals;

  size_t size() const { return upsert_keys.size() + removals.size(); }
  void upsert(const K& key, const V& value) {
    upsert_keys.push_back(key);
    upsert_values.push_back(value);
  }
  // `content` as the map holds it after this delta.
  void applyTo(MapContent<K, V>& content) const {
    for (const K& key : removals) {
      content.erase(key);
    }
    for (size_t i = 0; i < upsert_keys.size(); ++i) {
      content[upsert_keys[i]] = upsert_values[i];
    }
  }
};

// What a change of a few rules does to a bank: inventory prefixes never change on this path
// (a change of the inventory is compiled in full).
struct BankDelta {
  MapDelta<mseg_workload_key, mseg_workload> workloads;
  MapDelta<mseg_verdict_key, mseg_verdict_value> verdicts;
  MapDelta<mseg_port_verdict_key, mseg_verdict_value> port_verdicts;

  size_t size() const { return workloads.size() + verdicts.size() + port_verdicts.size(); }
  void applyTo(BankContent& content) const {
    workloads.applyTo(content.workloads);
    verdicts.applyTo(content.verdicts);
    port_verdicts.applyTo(content.port_verdicts);
  }
};

// Stable kernel rule ids. Counters are indexed by id, so a rule keeps its id (and its counts)
// across policy versions as long as its "segment/rule" name stays; new names get fresh ids.
class RuleIds {
public:
  // Starts from the names a previous agent left pinned.
  void adopt(const std::map<uint32_t, std::string>& existing);

  // Assigns ids to every rule of `policy` and returns them indexed by the compiler's rule
  // index (reserved indices map to the reserved ids). Names gone from the policy are released.
  std::vector<uint32_t> assign(const policy::CompiledPolicy& policy);

  // The id of one rule name, given a new id if the name was never seen; MSEG_RULE_NONE when
  // the ids are used up.
  uint32_t idOf(const std::string& name);

private:
  // Looked up by the compiled rules' names without copying them (heterogeneous lookup).
  struct NameHash {
    using is_transparent = void;
    size_t operator()(std::string_view name) const { return std::hash<std::string_view>{}(name); }
  };
  std::unordered_map<std::string, uint32_t, NameHash, std::equal_to<>> id_of_name_;
  uint32_t next_id_ = MSEG_FIRST_RULE_ID;
};

// A cgroup that a workload definition selects.
struct WorkloadBinding {
  uint64_t cgroup_id = 0;
  std::string cgroup_path;  // relative to the attach cgroup
  uint32_t workload_id = 0;
};

// Matches every cgroup against the workloads' cgroup patterns (fnmatch, '/' matched only
// literally). A cgroup selected by several workloads goes to the first in policy order.
std::vector<WorkloadBinding> bindWorkloads(const policy::CompiledPolicy& policy,
                                           const std::vector<CgroupEntry>& cgroups);

// The delta that brings a bank built for a base policy (its `base_workloads`, `bindings` and
// `base_rule_ids` from RuleIds::assign) to the policy `change` leads to; `added_rule_ids` are
// the kernel ids of the change's added rules, by their index.
BankDelta buildBankDelta(const policy::CompiledChange& change,
                         const std::vector<policy::CompiledWorkload>& base_workloads,
                         const std::vector<WorkloadBinding>& bindings,
                         const std::vector<uint32_t>& base_rule_ids,
                         const std::map<uint32_t, uint32_t>& added_rule_ids);

// The bank content for `policy`. `rule_ids` comes from RuleIds::assign.
BankContent buildBank(const policy::CompiledPolicy& policy,
                      const std::vector<WorkloadBinding>& bindings,
                      const std::vector<uint32_t>& rule_ids);

}  // namespace mseg::agent
