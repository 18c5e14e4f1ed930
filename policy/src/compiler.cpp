// The policy compiler: selectors to identities, rules to LPM-shaped verdict entries.
//
// The kernel takes the longest match within one (direction, workload, peer) and then the
// higher verdict of the exact peer and the `any` peer. Longest match alone would let a narrow
// allow beat a wider deny, so every entry emitted here already carries the highest verdict of
// all entries covering it. decide() in compiled.cpp is the userspace model of that lookup.
//
// A 100,000-rule policy yields millions of entries, so the work is organised for speed:
// entries are generated into one bucket per (direction, workload), and inside a bucket an
// entry is two integers that sort and compare cheaply.
#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <optional>
#include <set>
#include <tuple>
#include <unordered_map>

#include <fmt/format.h>

#include "mseg/policy/compiler.hpp"

namespace mseg::policy {
namespace {

struct L4Key {
  Protocol protocol = Protocol::Any;
  uint16_t port = 0;
  uint8_t prefix_len = 0;
};

// An entry inside its (direction, workload) bucket. The key packs peer, protocol, port and
// prefix length, most significant first, so sorting keys groups entries by peer as the
// kernel's lookup does. The rank folds verdict and rule index so that the lower rank is the
// one that takes precedence: higher verdict first, then the earlier rule.
struct RawEntry {
  uint64_t key = 0;
  uint32_t rank = 0;
};

constexpr unsigned kRankRuleBits = 28;
constexpr uint32_t kMaxRuleIndex = (1u << kRankRuleBits) - 1;
constexpr uint32_t kHighestVerdict = static_cast<uint32_t>(Verdict::Deny);

uint32_t rankOf(Verdict verdict, uint32_t rule_index) {
  return (kHighestVerdict - static_cast<uint32_t>(verdict)) << kRankRuleBits | rule_index;
}

Verdict verdictOfRank(uint32_t rank) {
  return static_cast<Verdict>(kHighestVerdict - (rank >> kRankRuleBits));
}

uint32_t ruleOfRank(uint32_t rank) { return rank & kMaxRuleIndex; }

uint64_t packKey(uint32_t peer, Protocol protocol, uint16_t port, uint8_t prefix_len) {
  return uint64_t{peer} << 32 | uint64_t{static_cast<uint8_t>(protocol)} << 24 |
         uint64_t{port} << 8 | prefix_len;
}

uint32_t peerOfKey(uint64_t key) { return static_cast<uint32_t>(key >> 32); }

Protocol protocolOfKey(uint64_t key) { return static_cast<Protocol>((key >> 24) & 0xff); }

uint16_t portOfKey(uint64_t key) { return static_cast<uint16_t>((key >> 8) & 0xffff); }

uint8_t prefixOfKey(uint64_t key) { return static_cast<uint8_t>(key & 0xff); }

uint16_t maskPort(uint16_t port, uint8_t prefix_len) {
  if (prefix_len == 0) {
    return 0;
  }
  return static_cast<uint16_t>(port & (0xffffu << (16 - prefix_len)));
}

constexpr size_t kProtocolSlots = 5;

size_t protocolSlot(Protocol protocol) {
  switch (protocol) {
    case Protocol::Any:
      return 0;
    case Protocol::Icmp:
      return 1;
    case Protocol::Tcp:
      return 2;
    case Protocol::Udp:
      return 3;
    case Protocol::Icmpv6:
      return 4;
  }
  return 0;
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

// The entry with exactly `key` in [begin, end), sorted by key; `end` when there is none.
using RawIt = std::vector<RawEntry>::iterator;

RawIt findKey(RawIt begin, RawIt end, uint64_t key) {
  auto it = std::lower_bound(begin, end, key,
                             [](const RawEntry& entry, uint64_t k) { return entry.key < k; });
  return it != end && it->key == key ? it : end;
}

std::vector<L4Key> l4KeysOf(const RuleSpec& rule) {
  std::vector<L4Key> keys;
  if (rule.protocol == Protocol::Any) {
    keys.push_back({Protocol::Any, 0, 0});
    return keys;
  }

  if (!rule.icmp_types.empty()) {
    std::set<uint8_t> types(rule.icmp_types.begin(), rule.icmp_types.end());
    for (uint8_t type : types) {
      keys.push_back({rule.protocol, type, 16});
    }
    return keys;
  }
  if (rule.ports.empty()) {
    keys.push_back({rule.protocol, 0, 0});
    return keys;
  }

  // Overlapping or adjacent ranges merge first, so the blocks stay minimal for the union.
  std::vector<PortRange> ranges = rule.ports;
  std::sort(ranges.begin(), ranges.end(),
            [](const PortRange& a, const PortRange& b) { return a.first < b.first; });
  std::vector<PortRange> merged;
  for (const auto& range : ranges) {
    if (!merged.empty() && uint32_t{range.first} <= uint32_t{merged.back().last} + 1) {
      merged.back().last = std::max(merged.back().last, range.last);
    } else {
      merged.push_back(range);
    }
  }
  for (const auto& range : merged) {
    for (const auto& block : portBlocks(range.first, range.last)) {
      keys.push_back({rule.protocol, block.port, block.prefix_len});
    }
  }
  return keys;
}

// Selectors compare by content: rules repeat the same few selectors many times over.
struct SelectorHash {
  size_t operator()(const Selector* selector) const {
    size_t hash = static_cast<size_t>(selector->kind);
    auto mix = [&](std::string_view text) {
      hash = hash * 1099511628211u ^ std::hash<std::string_view>()(text);
    };
    for (const auto& requirement : selector->requirements) {
      mix(requirement.key);
      for (const auto& value : requirement.values) {
        mix(value);
      }
    }
    return hash;
  }
};

struct SelectorEqual {
  bool operator()(const Selector* a, const Selector* b) const {
    if (a->kind != b->kind || a->requirements.size() != b->requirements.size()) {
      return false;
    }
    for (size_t i = 0; i < a->requirements.size(); ++i) {
      if (a->requirements[i].key != b->requirements[i].key ||
          a->requirements[i].values != b->requirements[i].values) {
        return false;
      }
    }
    return true;
  }
};

// label key -> value -> ascending ids, to find a selector's matches without scanning every
// workload or inventory entry for each of possibly 100,000 rules; answers are cached per
// distinct selector.
class LabelIndex {
public:
  void add(uint32_t id, const Labels& labels) {
    for (const auto& [key, value] : labels) {
      index_[key][value].push_back(id);
    }
  }

  // Ids whose labels satisfy every requirement of `selector`, ascending. The reference stays
  // valid as long as this index and the selector do.
  const std::vector<uint32_t>& match(const Selector& selector) {
    auto [it, inserted] = cache_.try_emplace(&selector);
    if (inserted) {
      it->second = compute(selector);
    }
    return it->second;
  }

private:
  // Starts from the requirement with the fewest candidates and filters by the others, so a
  // typical {app: x, tier: y} costs a few binary searches rather than a pass over every id
  // carrying `tier`.
  std::vector<uint32_t> compute(const Selector& selector) const {
    if (selector.kind != SelectorKind::Labels || selector.requirements.empty()) {
      return {};
    }
    std::vector<std::vector<uint32_t>> merged;  // for requirements listing several values
    merged.reserve(selector.requirements.size());
    std::vector<const std::vector<uint32_t>*> candidates;
    for (const auto& requirement : selector.requirements) {
      candidates.push_back(idsWithAnyValue(requirement, merged));
    }
    std::sort(candidates.begin(), candidates.end(),
              [](const auto* a, const auto* b) { return a->size() < b->size(); });

    std::vector<uint32_t> result;
    for (uint32_t id : *candidates.front()) {
      bool everywhere = std::all_of(candidates.begin() + 1, candidates.end(), [&](const auto* ids) {
        return std::binary_search(ids->begin(), ids->end(), id);
      });
      if (everywhere) {
        result.push_back(id);
      }
    }
    return result;
  }

  // The ascending ids having one of the requirement's values; several values are merged into
  // a new list kept in `merged`.
  const std::vector<uint32_t>* idsWithAnyValue(const LabelRequirement& requirement,
                                               std::vector<std::vector<uint32_t>>& merged) const {
    static const std::vector<uint32_t> kNone;
    auto values = index_.find(requirement.key);
    if (values == index_.end()) {
      return &kNone;
    }
    if (requirement.values.size() == 1) {
      auto it = values->second.find(requirement.values.front());
      return it == values->second.end() ? &kNone : &it->second;
    }

    std::vector<uint32_t>& ids = merged.emplace_back();
    for (const auto& value : requirement.values) {
      auto it = values->second.find(value);
      if (it != values->second.end()) {
        ids.insert(ids.end(), it->second.begin(), it->second.end());
      }
    }
    // An id has one value per key, so the lists are disjoint; only the order needs fixing.
    std::sort(ids.begin(), ids.end());
    return &ids;
  }

  std::unordered_map<std::string, std::unordered_map<std::string, std::vector<uint32_t>>> index_;
  std::unordered_map<const Selector*, std::vector<uint32_t>, SelectorHash, SelectorEqual> cache_;
};

struct UserLookup {
  std::optional<uint32_t> uid;
  int err = 0;  // set when the user database itself failed
};

UserLookup lookupUser(const std::string& name) {
  long suggested = sysconf(_SC_GETPW_R_SIZE_MAX);
  std::vector<char> buffer(suggested > 0 ? static_cast<size_t>(suggested) : 16384);
  passwd entry{};
  passwd* found = nullptr;
  int rc = 0;
  while ((rc = getpwnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found)) == ERANGE) {
    buffer.resize(buffer.size() * 2);
  }
  if (rc != 0) {
    return {std::nullopt, rc};
  }
  if (found == nullptr) {
    return {};
  }
  return {entry.pw_uid, 0};
}

struct ShadowState {
  bool has_entries = false;
  bool allows_something = false;  // some entry of the rule wins over every deny
  std::vector<uint32_t> by;       // the deny rules it loses to, distinct
};

struct DirectionState {
  bool managed = false;
  bool audit_only = true;  // every rule managing this direction is in audit mode
};

class Compiler {
public:
  Compiler(const Policy& policy, Diagnostics& out) : policy_(policy), out_(out) {}

  CompiledPolicy run() {
    compiled_.source_name = policy_.source_name;
    compiled_.content_hash = policy_.content_hash;
    compileWorkloads();
    compilePeers();
    findNestedPrefixes();
    if (!compileRules()) {
      return std::move(compiled_);
    }

    size_t total = 0;
    for (const auto& bucket : buckets_) {
      total += bucket.size();
    }
    compiled_.entries.reserve(total);
    for (size_t i = 0; i < buckets_.size(); ++i) {
      resolveBucket(i);
    }
    warnShadowedRules();
    applyDirectionStates();
    return std::move(compiled_);
  }

private:
  void warn(Position position, std::string message) {
    out_.warning(policy_.source_name, position, std::move(message));
  }

  void compileWorkloads() {
    size_t count = policy_.workloads.size();
    egress_.resize(count);
    ingress_.resize(count);
    buckets_.resize(2 * count);
    for (size_t i = 0; i < count; ++i) {
      const WorkloadSpec& spec = policy_.workloads[i];
      CompiledWorkload workload;
      workload.id = kFirstWorkloadIdentity + static_cast<uint32_t>(i);
      workload.name = spec.name;
      workload.labels = spec.labels;
      workload.cgroup_patterns = spec.cgroups;
      resolveUsers(spec, workload);

      bool selects_nothing = workload.uids.empty() && !workload.unresolved_users.empty();
      if (selects_nothing) {
        warn(
            spec.position,
            fmt::format("workload `{}` selects nothing on this host: none of its users exists here",
                        spec.name));
      } else {
        local_index_.add(workload.id, workload.labels);
      }
      compiled_.workloads.push_back(std::move(workload));
    }
  }

  void resolveUsers(const WorkloadSpec& spec, CompiledWorkload& workload) {
    for (const auto& user : spec.users) {
      std::optional<uint32_t> uid = user.uid;
      if (!uid) {
        UserLookup found = lookupUser(user.name);
        if (found.err != 0) {
          warn(
              user.position,
              fmt::format(
                  "user `{}` of workload `{}` could not be looked up: {}; it is left out on this host",
                  user.name, spec.name, std::strerror(found.err)));
        } else if (!found.uid) {
          warn(user.position,
               fmt::format(
                   "user `{}` of workload `{}` does not exist on this host; it is left out here",
                   user.name, spec.name));
        }
        uid = found.uid;
      }
      if (!uid) {
        workload.unresolved_users.push_back(user.name);
      } else if (std::find(workload.uids.begin(), workload.uids.end(), *uid) ==
                 workload.uids.end()) {
        workload.uids.push_back(*uid);
      }
    }
  }

  void compilePeers() {
    for (size_t i = 0; i < policy_.inventory.size(); ++i) {
      const InventorySpec& spec = policy_.inventory[i];
      uint32_t id = kFirstPeerIdentity + static_cast<uint32_t>(i);
      compiled_.peers.push_back({id, spec.name, spec.labels});
      for (const auto& cidr : spec.cidrs) {
        compiled_.prefixes.push_back({cidr.cidr.address, cidr.cidr.prefix_len, id});
      }
      peer_index_.add(id, spec.labels);
    }
  }

  // For each inventory entry, the prefixes of other entries nested inside one of its own. An
  // address takes the identity of the most specific prefix covering it, so a rule naming the
  // outer entry does not reach them. Prefixes sorted by address then length put every prefix
  // right after the ones containing it, so one pass with a stack finds each closest container.
  void findNestedPrefixes() {
    struct Item {
      const CidrSpec* cidr;
      uint32_t peer;
    };
    std::vector<Item> items;
    for (size_t i = 0; i < policy_.inventory.size(); ++i) {
      for (const auto& cidr : policy_.inventory[i].cidrs) {
        items.push_back({&cidr, kFirstPeerIdentity + static_cast<uint32_t>(i)});
      }
    }
    std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
      return std::tie(a.cidr->cidr.address, a.cidr->cidr.prefix_len) <
             std::tie(b.cidr->cidr.address, b.cidr->cidr.prefix_len);
    });
    nested_in_.assign(policy_.inventory.size(), {});
    std::vector<const Item*> containers;
    for (const Item& item : items) {
      while (!containers.empty() &&
             !cidrContains(containers.back()->cidr->cidr, item.cidr->cidr.address)) {
        containers.pop_back();
      }
      if (!containers.empty() && containers.back()->peer != item.peer) {
        const Item& outer = *containers.back();
        nested_in_[outer.peer - kFirstPeerIdentity].push_back({item.peer, outer.cidr, item.cidr});
      }
      containers.push_back(&item);
    }
  }

  // "Deny beats allow" suggests a deny naming a network reaches every address in it; it does
  // not reach a narrower prefix that another inventory entry claims. One warning per side.
  void warnIfDenyMissesNestedPrefixes(const std::string& name, const Selector& side,
                                      const std::vector<uint32_t>& peers) {
    if (side.kind != SelectorKind::Labels) {
      return;
    }
    for (uint32_t peer : peers) {
      for (const NestedPrefix& nested : nested_in_[peer - kFirstPeerIdentity]) {
        if (std::binary_search(peers.begin(), peers.end(), nested.peer)) {
          continue;
        }
        const std::string& outer_name = policy_.inventory[peer - kFirstPeerIdentity].name;
        const std::string& inner_name = policy_.inventory[nested.peer - kFirstPeerIdentity].name;
        warn(side.position,
             fmt::format("deny rule `{}` covers {} of `{}` but not {} inside it, which is "
                         "inventory entry `{}` (an address takes the identity of its most "
                         "specific prefix); select `{}` too if it must be denied",
                         name, nested.outer->text, outer_name, nested.inner->text, inner_name,
                         inner_name));
        return;
      }
    }
  }

  const std::vector<uint32_t>& peersOf(const Selector& selector) {
    static const std::vector<uint32_t> kAny = {kPeerAny};
    static const std::vector<uint32_t> kWorld = {kPeerWorld};
    switch (selector.kind) {
      case SelectorKind::Any:
        return kAny;
      case SelectorKind::World:
        return kWorld;
      case SelectorKind::Labels:
        break;
    }
    return peer_index_.match(selector);
  }

  bool compileRules() {
    size_t count = 0;
    for (const auto& segment : policy_.segments) {
      count += segment.rules.size();
    }
    if (count > kMaxRuleIndex - kFirstRuleIndex) {
      out_.error(policy_.source_name, {},
                 fmt::format("the policy has {} rules; at most {} are supported", count,
                             kMaxRuleIndex - kFirstRuleIndex));
      return false;
    }

    compiled_.rules.reserve(count);
    for (const auto& segment : policy_.segments) {
      compiled_.segments.push_back({segment.name, segment.mode == Mode::Audit,
                                    static_cast<uint32_t>(segment.rules.size())});
      for (const auto& rule : segment.rules) {
        compileRule(segment, rule);
      }
    }
    return true;
  }

  void compileRule(const SegmentSpec& segment, const RuleSpec& rule) {
    Mode mode = rule.mode.value_or(segment.mode);
    Verdict verdict = Verdict::Allow;
    if (rule.action == Action::Deny) {
      verdict = mode == Mode::Audit ? Verdict::Audit : Verdict::Deny;
    }
    uint32_t index = kFirstRuleIndex + static_cast<uint32_t>(compiled_.rules.size());
    std::string name = fmt::format("{}/{}", segment.name, rule.name);
    compiled_.rules.push_back(
        {index, segment.name, name, verdict,
         fmt::format("{}:{}:{}", policy_.source_name, rule.position.line, rule.position.column)});
    rule_specs_.push_back(&rule);
    shadows_.emplace_back();

    const std::vector<uint32_t>& local_from = local_index_.match(rule.from);
    const std::vector<uint32_t>& local_to = local_index_.match(rule.to);
    const std::vector<uint32_t>& peers_from = peersOf(rule.from);
    const std::vector<uint32_t>& peers_to = peersOf(rule.to);
    warnIfSelectsNothing(name, rule, local_from, local_to, peers_from, peers_to);
    if (rule.action == Action::Deny) {
      warnIfDenyMissesNestedPrefixes(name, rule.from, peers_from);
      warnIfDenyMissesNestedPrefixes(name, rule.to, peers_to);
    }

    std::vector<L4Key> keys = l4KeysOf(rule);
    uint32_t rank = rankOf(verdict, index);
    for (uint32_t workload : local_from) {
      size_t slot = workload - kFirstWorkloadIdentity;
      manage(egress_[slot], mode);
      addEntries(buckets_[slot], peers_to, keys, rank);
    }
    for (uint32_t workload : local_to) {
      size_t slot = workload - kFirstWorkloadIdentity;
      manage(ingress_[slot], mode);
      addEntries(buckets_[policy_.workloads.size() + slot], peers_from, keys, rank);
    }
  }

  void warnIfSelectsNothing(const std::string& name, const RuleSpec& rule,
                            const std::vector<uint32_t>& local_from,
                            const std::vector<uint32_t>& local_to,
                            const std::vector<uint32_t>& peers_from,
                            const std::vector<uint32_t>& peers_to) {
    bool warned = false;
    if (local_from.empty() && peers_from.empty()) {
      warn(rule.from.position,
           fmt::format("`from` of rule `{}` matches no workload or inventory entry on this host",
                       name));
      warned = true;
    }
    if (local_to.empty() && peers_to.empty()) {
      warn(rule.to.position,
           fmt::format("`to` of rule `{}` matches no workload or inventory entry on this host",
                       name));
      warned = true;
    }
    if (!warned && local_from.empty() && local_to.empty()) {
      warn(
          rule.position,
          fmt::format(
              "rule `{}` selects no workload of this host on either side, so it has no effect here",
              name));
    }
  }

  static void manage(DirectionState& state, Mode mode) {
    state.managed = true;
    state.audit_only = state.audit_only && mode == Mode::Audit;
  }

  static void addEntries(std::vector<RawEntry>& bucket, const std::vector<uint32_t>& peers,
                         const std::vector<L4Key>& keys, uint32_t rank) {
    for (uint32_t peer : peers) {
      for (const auto& key : keys) {
        bucket.push_back({packKey(peer, key.protocol, key.port, key.prefix_len), rank});
      }
    }
  }

  // Sorts one bucket, merges duplicate keys, resolves precedence, records which allow entries
  // lose to a deny, and appends the result to the compiled entries. Buckets are visited in
  // (direction, workload) order, so the entries come out sorted like the kernel's keys.
  void resolveBucket(size_t index) {
    std::vector<RawEntry> raw = std::move(buckets_[index]);
    if (raw.empty()) {
      return;
    }
    std::sort(raw.begin(), raw.end(), [](const RawEntry& a, const RawEntry& b) {
      return a.key != b.key ? a.key < b.key : a.rank < b.rank;
    });
    std::vector<RawEntry> merged;
    merged.reserve(raw.size());
    for (const auto& entry : raw) {
      if (merged.empty() || merged.back().key != entry.key) {
        merged.push_back(entry);
      }
    }

    resolveGroups(merged);
    recordShadowing(raw, merged);

    size_t workloads = policy_.workloads.size();
    Direction direction = index < workloads ? Direction::Egress : Direction::Ingress;
    uint32_t workload = kFirstWorkloadIdentity + static_cast<uint32_t>(index % workloads);
    for (const auto& entry : merged) {
      compiled_.entries.push_back({direction, workload, peerOfKey(entry.key),
                                   protocolOfKey(entry.key), portOfKey(entry.key),
                                   prefixOfKey(entry.key), verdictOfRank(entry.rank),
                                   ruleOfRank(entry.rank)});
    }
  }

  // Gives each entry the best rank of the entries covering it in its peer group, so that the
  // kernel's longest match is also the highest-precedence match. Doing it in place is safe:
  // an entry already raised holds the best of its own covering keys, all of which also cover
  // every key it covers.
  static void resolveGroups(std::vector<RawEntry>& merged) {
    for (auto group_begin = merged.begin(); group_begin != merged.end();) {
      // Bit n of prefixes[slot]: some entry of that protocol has port prefix n. Most groups
      // hold one or two prefix lengths, which spares most of the 17 probes per entry.
      std::array<uint32_t, kProtocolSlots> prefixes{};
      uint32_t peer = peerOfKey(group_begin->key);
      auto group_end = group_begin;
      for (; group_end != merged.end() && peerOfKey(group_end->key) == peer; ++group_end) {
        prefixes[protocolSlot(protocolOfKey(group_end->key))] |= 1u << prefixOfKey(group_end->key);
      }

      for (auto entry = group_begin; entry != group_end; ++entry) {
        forEachCoveringKey(entry->key, [&](uint64_t key) {
          if ((prefixes[protocolSlot(protocolOfKey(key))] & (1u << prefixOfKey(key))) == 0) {
            return;
          }
          if (auto it = findKey(group_begin, group_end, key); it != group_end) {
            entry->rank = std::min(entry->rank, it->rank);
          }
        });
      }
      group_begin = group_end;
    }
  }

  // An allow entry loses when a deny covers its key in its own peer group (then its resolved
  // entry is no longer Allow) or in the group of the `any` peer, which the kernel consults as
  // well. `raw` and `merged` are sorted alike, so each raw entry's resolved key is found by
  // walking both.
  void recordShadowing(const std::vector<RawEntry>& raw, std::vector<RawEntry>& merged) {
    auto any_end = std::find_if(merged.begin(), merged.end(),
                                [](const RawEntry& e) { return peerOfKey(e.key) != kPeerAny; });
    auto resolved = merged.begin();
    for (const auto& entry : raw) {
      while (resolved->key != entry.key) {
        ++resolved;
      }
      if (verdictOfRank(entry.rank) != Verdict::Allow) {
        continue;
      }
      ShadowState& state = shadows_[ruleOfRank(entry.rank) - kFirstRuleIndex];
      state.has_entries = true;
      if (state.allows_something) {
        continue;
      }

      std::optional<uint32_t> by;
      if (verdictOfRank(resolved->rank) > Verdict::Allow) {
        by = ruleOfRank(resolved->rank);
      } else if (peerOfKey(entry.key) != kPeerAny) {
        by = denyCoveringInAnyGroup(merged.begin(), any_end, entry.key);
      }
      if (!by) {
        state.allows_something = true;
      } else if (std::find(state.by.begin(), state.by.end(), *by) == state.by.end()) {
        state.by.push_back(*by);
      }
    }
  }

  // The rule of a resolved deny entry in the `any` peer group [begin, end) that covers `key`.
  static std::optional<uint32_t> denyCoveringInAnyGroup(RawIt begin, RawIt end, uint64_t key) {
    if (begin == end) {
      return std::nullopt;
    }
    std::optional<uint32_t> found;
    auto check = [&](uint64_t probe) {
      auto it = findKey(begin, end, probe);
      if (!found && it != end && verdictOfRank(it->rank) > Verdict::Allow) {
        found = ruleOfRank(it->rank);
      }
    };
    uint64_t any_key = packKey(kPeerAny, protocolOfKey(key), portOfKey(key), prefixOfKey(key));
    check(any_key);
    forEachCoveringKey(any_key, check);
    return found;
  }

  // An allow rule is wholly shadowed when each of its entries loses to one deny entry, so it
  // never decides a flow.
  // LIMITATION: an allow covered only by the union of several narrower denies (an allow of
  // ports 8-15 under denies of 8-11 and 12-15) is not reported; that would need interval
  // arithmetic per key.
  void warnShadowedRules() {
    for (size_t i = 0; i < shadows_.size(); ++i) {
      const ShadowState& state = shadows_[i];
      if (!state.has_entries || state.allows_something) {
        continue;
      }
      std::vector<uint32_t> by = state.by;
      std::sort(by.begin(), by.end());
      std::vector<std::string> names;
      for (uint32_t index : by) {
        if (names.size() == 3) {
          names.push_back("...");
          break;
        }
        names.push_back("`" + compiled_.rules[index - kFirstRuleIndex].name + "`");
      }
      warn(rule_specs_[i]->position,
           fmt::format("rule `{}` is wholly shadowed by deny rule{} {}; it never allows anything",
                       compiled_.rules[i].name, by.size() == 1 ? "" : "s", fmt::join(names, ", ")));
    }
  }

  void applyDirectionStates() {
    for (size_t i = 0; i < compiled_.workloads.size(); ++i) {
      CompiledWorkload& workload = compiled_.workloads[i];
      workload.egress_managed = egress_[i].managed;
      workload.egress_audit = egress_[i].managed && egress_[i].audit_only;
      workload.ingress_managed = ingress_[i].managed;
      workload.ingress_audit = ingress_[i].managed && ingress_[i].audit_only;
    }
  }

  const Policy& policy_;
  Diagnostics& out_;
  CompiledPolicy compiled_;
  LabelIndex local_index_;  // workloads that can select something on this host
  LabelIndex peer_index_;
  std::vector<DirectionState> egress_;  // by workload id - kFirstWorkloadIdentity
  std::vector<DirectionState> ingress_;
  // Generated entries: egress of each workload in id order, then ingress likewise.
  std::vector<std::vector<RawEntry>> buckets_;
  std::vector<const RuleSpec*> rule_specs_;  // by rule index - kFirstRuleIndex
  std::vector<ShadowState> shadows_;         // by rule index - kFirstRuleIndex
  struct NestedPrefix {
    uint32_t peer;           // the entry whose prefix lies inside
    const CidrSpec* outer;   // the containing prefix, as written
    const CidrSpec* inner;
  };
  std::vector<std::vector<NestedPrefix>> nested_in_;  // by peer id - kFirstPeerIdentity
};

// Far above any real policy (100,000 rules take 12 MB), far below what would exhaust memory.
constexpr size_t kMaxPolicyBytes = size_t{256} << 20;

Result<std::string> readFile(std::string_view path) {
  std::string name(path);
  // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below.
  int fd = open(name.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    return Error::fromErrno(errno, fmt::format("open {}", path));
  }

  std::string text;
  struct stat info {};
  if (fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    close(fd);
    return Error(EINVAL, fmt::format("{} is not a regular file (a directory, device or pipe); "
                                     "give the path of a policy file", path));
  }
  if (static_cast<uint64_t>(info.st_size) > kMaxPolicyBytes) {
    close(fd);
    return Error(EFBIG, fmt::format("{} is {} bytes; a policy may have at most {} MiB", path,
                                    info.st_size, kMaxPolicyBytes >> 20));
  }
  text.reserve(static_cast<size_t>(info.st_size));
  char buffer[1 << 16];
  while (true) {
    ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      int err = errno;
      close(fd);
      return Error::fromErrno(err, fmt::format("read {}", path));
    }
    if (n == 0) {
      break;
    }
    text.append(buffer, static_cast<size_t>(n));
    if (text.size() > kMaxPolicyBytes) {  // the file grew while we read it
      close(fd);
      return Error(EFBIG, fmt::format("{} grew past {} MiB while being read", path,
                                      kMaxPolicyBytes >> 20));
    }
  }
  close(fd);
  return text;
}

}  // namespace

std::vector<PortBlock> portBlocks(uint16_t first, uint16_t last) {
  std::vector<PortBlock> blocks;
  uint32_t start = first;
  uint32_t end = uint32_t{last} + 1;
  while (start < end) {
    // The largest block aligned at `start` (its lowest set bit) that does not pass `end`.
    uint32_t size = start == 0 ? 0x10000u : (start & (~start + 1));
    while (start + size > end) {
      size >>= 1;
    }
    uint8_t prefix_len = 16;
    for (uint32_t s = size; s > 1; s >>= 1) {
      --prefix_len;
    }
    blocks.push_back({static_cast<uint16_t>(start), prefix_len});
    start += size;
  }
  return blocks;
}

Result<CompiledPolicy> compilePolicy(const Policy& policy, Diagnostics& out) {
  size_t errors_before = out.errorCount();
  CompiledPolicy compiled = Compiler(policy, out).run();
  size_t errors = out.errorCount() - errors_before;
  if (errors > 0) {
    return Error::invalid(fmt::format("{}: {}", policy.source_name, countErrors(errors)));
  }
  return compiled;
}

Result<CompiledPolicy> loadPolicyText(std::string_view text, std::string_view source_name,
                                      Diagnostics& out) {
  auto policy = parsePolicy(text, source_name, out);
  if (!policy) {
    return policy.error();
  }
  return compilePolicy(*policy, out);
}

Result<CompiledPolicy> loadPolicyFile(std::string_view path, Diagnostics& out, LoadTimes* times) {
  using Clock = std::chrono::steady_clock;
  LoadTimes local;
  LoadTimes& spent = times != nullptr ? *times : local;
  auto mark = Clock::now();
  auto lap = [&mark](std::chrono::nanoseconds& into) {
    auto now = Clock::now();
    into = now - mark;
    mark = now;
  };

  auto text = readFile(path);
  lap(spent.read);
  if (!text) {
    return text.error().wrap("load policy");
  }
  auto policy = parsePolicy(*text, path, out);
  lap(spent.parse);
  if (!policy) {
    return policy.error();
  }
  auto compiled = compilePolicy(*policy, out);
  lap(spent.compile);
  return compiled;
}

}  // namespace mseg::policy
