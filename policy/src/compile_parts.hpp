// Building blocks shared by the whole-policy compiler (compiler.cpp) and the change compiler
// (incremental.cpp), so that both produce entries by the same rules. Internal to the policy
// library.
//
// Entries are generated into one bucket per (direction, workload); inside a bucket an entry is
// a packed key and a rank that sort and compare cheaply. The rank folds the verdict and the
// rule's place in the policy: the lower rank takes precedence (higher verdict first, then the
// earlier rule). Places are spread out with gaps (rule index << orderShift), so that a change
// can put a new rule between two existing ones without renumbering every entry.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "mseg/policy/compiled.hpp"
#include "mseg/policy/policy.hpp"

namespace mseg::policy::detail {

struct L4Key {
  Protocol protocol = Protocol::Any;
  uint16_t port = 0;
  uint8_t prefix_len = 0;
};

struct RawEntry {
  uint64_t key = 0;   // packKey(): peer, protocol, port, prefix length
  uint32_t rank = 0;  // rankOf(): lower wins
  uint32_t rule = 0;  // the rule index whose verdict this is
};

inline bool operator<(const RawEntry& a, const RawEntry& b) {
  return a.key != b.key ? a.key < b.key : a.rank < b.rank;
}

inline constexpr unsigned kRankOrderBits = 30;
inline constexpr uint32_t kRankOrderMask = (1u << kRankOrderBits) - 1;
inline constexpr uint32_t kMaxRuleIndex = (1u << 28) - 1;
inline constexpr uint32_t kHighestVerdict = static_cast<uint32_t>(Verdict::Deny);

// How far apart consecutive rules' places are for a policy whose highest rule index is
// `max_rule_index`: as wide as 30 bits allow, at least 4.
inline unsigned orderShift(uint32_t max_rule_index) {
  return kRankOrderBits - static_cast<unsigned>(std::bit_width(max_rule_index));
}

inline uint32_t rankOf(Verdict verdict, uint32_t order) {
  return (kHighestVerdict - static_cast<uint32_t>(verdict)) << kRankOrderBits | order;
}

inline Verdict verdictOfRank(uint32_t rank) {
  return static_cast<Verdict>(kHighestVerdict - (rank >> kRankOrderBits));
}

inline uint64_t packKey(uint32_t peer, Protocol protocol, uint16_t port, uint8_t prefix_len) {
  return uint64_t{peer} << 32 | uint64_t{static_cast<uint8_t>(protocol)} << 24 |
         uint64_t{port} << 8 | prefix_len;
}

inline uint32_t peerOfKey(uint64_t key) { return static_cast<uint32_t>(key >> 32); }

inline Protocol protocolOfKey(uint64_t key) { return static_cast<Protocol>((key >> 24) & 0xff); }

inline uint16_t portOfKey(uint64_t key) { return static_cast<uint16_t>((key >> 8) & 0xffff); }

inline uint8_t prefixOfKey(uint64_t key) { return static_cast<uint8_t>(key & 0xff); }

inline uint16_t maskPort(uint16_t port, uint8_t prefix_len) {
  if (prefix_len == 0) {
    return 0;
  }
  return static_cast<uint16_t>(port & (0xffffu << (16 - prefix_len)));
}

// The keys of the same peer that cover `key`, wider first: protocol Any, then each shorter
// port prefix of the same protocol. A protocol-Any key is covered by itself only.
template <typename Visit>
void forEachCoveringKey(uint64_t key, Visit visit) {
  Protocol protocol = protocolOfKey(key);
  if (protocol == Protocol::Any) {
    return;
  }
  uint32_t peer = peerOfKey(key);
  visit(packKey(peer, Protocol::Any, 0, 0));
  uint16_t port = portOfKey(key);
  for (uint8_t len = 0; len < prefixOfKey(key); ++len) {
    visit(packKey(peer, protocol, maskPort(port, len), len));
  }
}

using RawIt = std::vector<RawEntry>::iterator;

// The entry with exactly `key` in [begin, end), sorted by key; `end` when there is none.
inline RawIt findKey(RawIt begin, RawIt end, uint64_t key) {
  auto it = std::lower_bound(begin, end, key,
                             [](const RawEntry& entry, uint64_t k) { return entry.key < k; });
  return it != end && it->key == key ? it : end;
}

// The protocol and port blocks a rule covers, fewest blocks for its ports.
std::vector<L4Key> l4KeysOf(const RuleSpec& rule);

// A user name looked up in this host's user database.
struct UserLookup {
  std::optional<uint32_t> uid;  // unset: no such user here
  int err = 0;                  // set when the user database itself failed
};
UserLookup lookupUser(const std::string& name);

// The verdict a rule gives: Allow, Deny, or Audit for a deny in audit mode.
Verdict verdictOf(const SegmentSpec& segment, const RuleSpec& rule);

// Sorted raw entries of one bucket, to resolved ones: duplicates of a key keep the lowest
// rank, and every entry takes the best rank of the entries covering it in its peer group, so
// the kernel's longest match is also the highest-precedence match.
std::vector<RawEntry> resolveBucket(const std::vector<RawEntry>& sorted_raw);

// The verdict entry of a resolved raw entry of bucket `bucket` (egress of each workload in id
// order, then ingress likewise).
inline VerdictEntry verdictEntryOf(size_t bucket, size_t workload_count, const RawEntry& entry) {
  Direction direction = bucket < workload_count ? Direction::Egress : Direction::Ingress;
  uint32_t workload = kFirstWorkloadIdentity + static_cast<uint32_t>(bucket % workload_count);
  return {direction,           workload,           peerOfKey(entry.key),
          protocolOfKey(entry.key), portOfKey(entry.key), prefixOfKey(entry.key),
          verdictOfRank(entry.rank), entry.rule};
}

// A workload's flags for one direction from how many rules manage it and how many of those
// enforce: managed by any, audit-only when none enforces.
inline void setDirectionFlags(CompiledWorkload& workload, Direction direction,
                              uint32_t managing, uint32_t enforcing) {
  bool& managed = direction == Direction::Egress ? workload.egress_managed
                                                 : workload.ingress_managed;
  bool& audit = direction == Direction::Egress ? workload.egress_audit : workload.ingress_audit;
  managed = managing > 0;
  audit = managing > 0 && enforcing == 0;
}

// label key -> value -> ascending ids, to find a selector's matches without scanning every
// workload or inventory entry for each of possibly 100,000 rules.
class LabelIndex {
public:
  void add(uint32_t id, const Labels& labels);

  // Ids whose labels satisfy every requirement of `selector`, ascending. Answers are cached
  // per distinct selector content; the reference stays valid as long as this index and the
  // selector do.
  const std::vector<uint32_t>& match(const Selector& selector);

  // The same without caching, for selectors that may not outlive this index.
  std::vector<uint32_t> compute(const Selector& selector) const;

private:
  const std::vector<uint32_t>* idsWithAnyValue(const LabelRequirement& requirement,
                                               std::vector<std::vector<uint32_t>>& merged) const;

  // Selectors compare by content: rules repeat the same few selectors many times over.
  struct SelectorHash {
    size_t operator()(const Selector* selector) const;
  };
  struct SelectorEqual {
    bool operator()(const Selector* a, const Selector* b) const;
  };

  std::unordered_map<std::string, std::unordered_map<std::string, std::vector<uint32_t>>> index_;
  std::unordered_map<const Selector*, std::vector<uint32_t>, SelectorHash, SelectorEqual> cache_;
};

}  // namespace mseg::policy::detail
