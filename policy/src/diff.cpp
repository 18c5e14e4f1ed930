// Policy diff: rules by name, the workload of each cgroup of the host, then, for every workload
// and direction, the verdict over each peer, protocol and port range in the running and the
// proposed policy.
//
// Verdicts only change at the edges of some entry's port block, so each (workload, direction,
// peer, protocol) is cut at those edges and judged once per piece with decideAmong(), the same
// model `policy trace` and the tests use for the kernel's lookup.
#include "mseg/policy/diff.hpp"

#include <algorithm>
#include <array>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>

#include <fmt/format.h>

#include "mseg/policy/compiler.hpp"

namespace mseg::policy {
namespace {

constexpr const char* kAnyPeerName = "any";
constexpr const char* kWorldPeerName = "world";
constexpr const char* kDefaultDenyName = "(default deny)";
// Stands for every IP protocol that is not TCP, UDP, ICMP or ICMPv6: only protocol-Any entries
// match it, as in the kernel.
constexpr Protocol kOtherProtocol = static_cast<Protocol>(255);

uint64_t groupKey(Direction direction, uint32_t workload_id, uint32_t peer_id) {
  return uint64_t{static_cast<uint8_t>(direction)} << 63 | uint64_t{workload_id} << 32 | peer_id;
}

uint64_t workloadKey(Direction direction, uint32_t workload_id) {
  return uint64_t{static_cast<uint8_t>(direction)} << 32 | workload_id;
}

using Entries = std::vector<const VerdictEntry*>;

// One policy, indexed for comparison by names.
class Side {
public:
  explicit Side(const CompiledPolicy& policy) : policy_(policy) {
    for (const auto& workload : policy.workloads) {
      workload_by_name_[workload.name] = &workload;
      workload_name_[workload.id] = workload.name;
    }
    peer_name_[kPeerAny] = kAnyPeerName;
    peer_name_[kPeerWorld] = kWorldPeerName;
    for (const auto& peer : policy.peers) {
      peer_name_[peer.id] = peer.name;
    }
    for (const auto& [id, name] : peer_name_) {
      peer_by_name_[name] = id;
    }
    for (const auto& entry : policy.entries) {
      auto& group = groups_[groupKey(entry.direction, entry.workload_id, entry.peer_id)];
      if (group.empty()) {
        peers_of_[workloadKey(entry.direction, entry.workload_id)].push_back(entry.peer_id);
      }
      group.push_back(&entry);
    }
  }

  const CompiledWorkload* workload(const std::string& name) const {
    auto found = workload_by_name_.find(name);
    return found == workload_by_name_.end() ? nullptr : found->second;
  }

  const std::string& workloadName(uint32_t id) const { return workload_name_.at(id); }

  std::string peerName(uint32_t id) const {
    auto found = peer_name_.find(id);
    return found == peer_name_.end() ? fmt::format("peer {}", id) : found->second;
  }

  // The peer id of a name, or nullopt when this policy has no such peer.
  std::optional<uint32_t> peerId(const std::string& name) const {
    auto found = peer_by_name_.find(name);
    return found == peer_by_name_.end() ? std::nullopt : std::optional<uint32_t>(found->second);
  }

  const Entries& group(Direction direction, uint32_t workload_id, uint32_t peer_id) const {
    static const Entries kNone;
    auto found = groups_.find(groupKey(direction, workload_id, peer_id));
    return found == groups_.end() ? kNone : found->second;
  }

  // Names of the peers (not `any`) that have entries of this workload and direction.
  std::vector<std::string> namedPeers(Direction direction, uint32_t workload_id) const {
    std::vector<std::string> names;
    auto found = peers_of_.find(workloadKey(direction, workload_id));
    if (found != peers_of_.end()) {
      for (uint32_t peer : found->second) {
        if (peer != kPeerAny) {
          names.push_back(peerName(peer));
        }
      }
    }
    return names;
  }

  std::string ruleName(uint32_t rule_index) const {
    if (rule_index == kRuleDefaultDeny) {
      return kDefaultDenyName;
    }
    if (rule_index < kFirstRuleIndex || rule_index - kFirstRuleIndex >= policy_.rules.size()) {
      return "";
    }
    return policy_.rules[rule_index - kFirstRuleIndex].name;
  }

  const CompiledPolicy& policy() const { return policy_; }

private:
  const CompiledPolicy& policy_;
  std::unordered_map<std::string, const CompiledWorkload*> workload_by_name_;
  std::unordered_map<uint32_t, std::string> workload_name_;
  std::unordered_map<uint32_t, std::string> peer_name_;
  std::unordered_map<std::string, uint32_t> peer_by_name_;
  std::unordered_map<uint64_t, Entries> groups_;
  std::unordered_map<uint64_t, std::vector<uint32_t>> peers_of_;
};

// What one side's kernel would consult for a (workload, direction, peer) row.
struct Row {
  const Side* side = nullptr;
  const CompiledWorkload* workload = nullptr;  // nullptr: the workload is not in this policy
  Entries exact;
  Entries any;

  Decision decide(Direction direction, Protocol protocol, uint16_t port) const {
    if (workload == nullptr) {
      return {};
    }
    return decideAmong(*workload, direction, exact, any, protocol, port);
  }
};

struct ProtocolDomain {
  PathProtocol name;
  Protocol protocol;
  uint16_t last_port;  // ICMP types are one byte; other protocols have no ports
};

constexpr std::array<ProtocolDomain, 5> kDomains = {{
    {PathProtocol::Tcp, Protocol::Tcp, 65535},
    {PathProtocol::Udp, Protocol::Udp, 65535},
    {PathProtocol::Icmp, Protocol::Icmp, 255},
    {PathProtocol::Icmpv6, Protocol::Icmpv6, 255},
    {PathProtocol::Other, kOtherProtocol, 0},
}};

// The first port of every piece of [0, last_port] on which no entry's block starts or ends.
std::vector<uint32_t> pieceStarts(const std::array<const Entries*, 4>& groups, Protocol protocol,
                                  uint16_t last_port) {
  std::set<uint32_t> starts = {0};
  for (const Entries* group : groups) {
    for (const VerdictEntry* entry : *group) {
      if (entry->protocol != protocol) {
        continue;
      }
      uint32_t size = 1u << (16 - std::min<uint8_t>(entry->port_prefix_len, 16));
      uint32_t first = entry->port & ~(size - 1);
      if (first <= last_port) {
        starts.insert(first);
      }
      if (first + size <= last_port) {
        starts.insert(first + size);
      }
    }
  }
  return {starts.begin(), starts.end()};
}

bool sameEntries(const Side& a_side, const Entries& a, const Side& b_side, const Entries& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                    [&](const VerdictEntry* x, const VerdictEntry* y) {
                      return x->protocol == y->protocol && x->port == y->port &&
                             x->port_prefix_len == y->port_prefix_len &&
                             x->verdict == y->verdict &&
                             a_side.ruleName(x->rule_index) == b_side.ruleName(y->rule_index);
                    });
}

// Whether both sides hold the same entries and direction state for a row, so nothing in it
// can change: most rows of a large policy, which are then not cut into pieces at all.
bool sameRow(const Row& before, const Row& after) {
  const CompiledWorkload* a = before.workload;
  const CompiledWorkload* b = after.workload;
  return a != nullptr && b != nullptr && a->egress_managed == b->egress_managed &&
         a->ingress_managed == b->ingress_managed && a->egress_audit == b->egress_audit &&
         a->ingress_audit == b->ingress_audit &&
         sameEntries(*before.side, before.exact, *after.side, after.exact) &&
         sameEntries(*before.side, before.any, *after.side, after.any);
}

bool sameVerdicts(const PathChange& a, const PathChange& b) {
  return a.old_verdict == b.old_verdict && a.new_verdict == b.new_verdict &&
         a.old_rule == b.old_rule && a.new_rule == b.new_rule;
}

bool sameChange(const PathChange& a, const PathChange& b) {
  return sameVerdicts(a, b) && a.protocol == b.protocol && a.first_port == b.first_port &&
         a.last_port == b.last_port;
}

// The changes of one row, piece by piece, adjacent pieces with the same verdicts merged, and
// folded into one protocol-Any change when every protocol changes alike over its whole range.
std::vector<PathChange> rowChanges(const Row& before, const Row& after, Direction direction,
                                   const PathChange& identity) {
  if (sameRow(before, after)) {
    return {};
  }
  std::vector<PathChange> changes;
  size_t whole_protocols = 0;
  for (const auto& domain : kDomains) {
    auto starts = pieceStarts({&before.exact, &before.any, &after.exact, &after.any},
                              domain.protocol, domain.last_port);
    size_t changes_before = changes.size();
    for (size_t i = 0; i < starts.size(); i++) {
      uint16_t first = static_cast<uint16_t>(starts[i]);
      uint16_t last = static_cast<uint16_t>(i + 1 < starts.size() ? starts[i + 1] - 1
                                                                  : domain.last_port);
      Decision old_decision = before.decide(direction, domain.protocol, first);
      Decision new_decision = after.decide(direction, domain.protocol, first);
      if (old_decision.verdict == new_decision.verdict) {
        continue;
      }
      PathChange change = identity;
      change.protocol = domain.name;
      change.first_port = first;
      change.last_port = last;
      change.old_verdict = old_decision.verdict;
      change.new_verdict = new_decision.verdict;
      change.old_rule = before.side->ruleName(old_decision.rule_index);
      change.new_rule = after.side->ruleName(new_decision.rule_index);
      if (changes.size() > changes_before && sameVerdicts(changes.back(), change) &&
          changes.back().last_port + 1u == first) {
        changes.back().last_port = last;
      } else {
        changes.push_back(std::move(change));
      }
    }
    if (changes.size() == changes_before + 1 && changes.back().first_port == 0 &&
        changes.back().last_port == domain.last_port &&
        sameVerdicts(changes.back(), changes.front())) {
      whole_protocols += 1;
    }
  }
  if (whole_protocols == kDomains.size() && changes.size() == kDomains.size()) {
    PathChange any = changes.front();
    any.protocol = PathProtocol::Any;
    any.first_port = 0;
    any.last_port = 0;
    return {any};
  }
  return changes;
}

Row rowOf(const Side& side, const CompiledWorkload* workload, Direction direction,
          const std::string& peer) {
  Row row{&side, workload, {}, {}};
  if (workload == nullptr) {
    return row;
  }
  row.any = side.group(direction, workload->id, kPeerAny);
  if (peer != kAnyPeerName) {
    if (auto id = side.peerId(peer)) {
      row.exact = side.group(direction, workload->id, *id);
    }
  }
  return row;
}

void diffWorkload(const Side& before, const Side& after, const std::string& name,
                  Direction direction, std::vector<PathChange>& out) {
  const CompiledWorkload* old_workload = before.workload(name);
  const CompiledWorkload* new_workload = after.workload(name);
  auto managed = [&](const CompiledWorkload* workload) {
    return workload != nullptr && (direction == Direction::Egress ? workload->egress_managed
                                                                  : workload->ingress_managed);
  };
  if (!managed(old_workload) && !managed(new_workload)) {
    return;
  }

  std::set<std::string> peers;
  if (old_workload != nullptr) {
    auto named = before.namedPeers(direction, old_workload->id);
    peers.insert(named.begin(), named.end());
  }
  if (new_workload != nullptr) {
    auto named = after.namedPeers(direction, new_workload->id);
    peers.insert(named.begin(), named.end());
  }

  PathChange identity;
  identity.workload = name;
  identity.direction = direction;
  identity.peer = kAnyPeerName;
  auto any_changes = rowChanges(rowOf(before, old_workload, direction, kAnyPeerName),
                                rowOf(after, new_workload, direction, kAnyPeerName), direction,
                                identity);
  out.insert(out.end(), any_changes.begin(), any_changes.end());
  for (const auto& peer : peers) {
    identity.peer = peer;
    auto changes = rowChanges(rowOf(before, old_workload, direction, peer),
                              rowOf(after, new_workload, direction, peer), direction, identity);
    bool like_any = changes.size() == any_changes.size() &&
                    std::equal(changes.begin(), changes.end(), any_changes.begin(), sameChange);
    if (!like_any) {
      out.insert(out.end(), changes.begin(), changes.end());
    }
  }
}

// What a rule decides in one policy, comparable across policies: its verdict and an
// order-independent fingerprint of the entries it decides, in names rather than ids.
struct RuleFacts {
  Verdict verdict = Verdict::None;
  std::string location;
  size_t entries = 0;
  uint64_t fingerprint = 0;
};

uint64_t mix(uint64_t value) {
  value += 0x9e3779b97f4a7c15ull;
  value = (value ^ (value >> 30)) * 0xbf58476d1ce4e5b9ull;
  value = (value ^ (value >> 27)) * 0x94d049bb133111ebull;
  return value ^ (value >> 31);
}

std::map<std::string, RuleFacts> ruleFacts(const Side& side) {
  const CompiledPolicy& policy = side.policy();
  std::vector<RuleFacts*> by_index(policy.rules.size(), nullptr);
  std::map<std::string, RuleFacts> facts;
  for (const auto& rule : policy.rules) {
    RuleFacts& fact = facts[rule.name];
    fact.verdict = rule.verdict;
    fact.location = rule.where;
    by_index[rule.index - kFirstRuleIndex] = &fact;
  }

  std::unordered_map<uint32_t, uint64_t> workload_hash;
  std::unordered_map<uint32_t, uint64_t> peer_hash;
  std::hash<std::string> hash;
  for (const auto& entry : policy.entries) {
    if (entry.rule_index < kFirstRuleIndex ||
        entry.rule_index - kFirstRuleIndex >= by_index.size()) {
      continue;
    }
    auto [workload, new_workload] = workload_hash.try_emplace(entry.workload_id, 0);
    if (new_workload) {
      workload->second = hash(side.workloadName(entry.workload_id));
    }
    auto [peer, new_peer] = peer_hash.try_emplace(entry.peer_id, 0);
    if (new_peer) {
      peer->second = hash(side.peerName(entry.peer_id));
    }
    uint64_t l4 = uint64_t{static_cast<uint8_t>(entry.direction)} << 40 |
                  uint64_t{static_cast<uint8_t>(entry.protocol)} << 32 |
                  uint64_t{entry.port} << 8 | entry.port_prefix_len;
    RuleFacts& fact = *by_index[entry.rule_index - kFirstRuleIndex];
    fact.entries += 1;
    fact.fingerprint += mix(mix(mix(workload->second) ^ peer->second) ^ l4);
  }
  return facts;
}

const char* verdictWord(Verdict verdict) {
  switch (verdict) {
    case Verdict::Allow: return "allow";
    case Verdict::Audit: return "audit";
    case Verdict::Deny: return "deny";
    case Verdict::None: break;
  }
  return "none";
}

std::vector<RuleChange> diffRules(const Side& before, const Side& after) {
  auto old_rules = ruleFacts(before);
  auto new_rules = ruleFacts(after);
  std::vector<RuleChange> changes;
  for (const auto& [name, fact] : new_rules) {
    auto old = old_rules.find(name);
    if (old == old_rules.end()) {
      changes.push_back({RuleChange::Kind::Added, name, Verdict::None, fact.verdict,
                         fact.location, ""});
      continue;
    }
    if (old->second.verdict != fact.verdict) {
      changes.push_back({RuleChange::Kind::Changed, name, old->second.verdict, fact.verdict,
                         fact.location,
                         fmt::format("verdict {} -> {}", verdictWord(old->second.verdict),
                                     verdictWord(fact.verdict))});
    } else if (old->second.entries != fact.entries ||
               old->second.fingerprint != fact.fingerprint) {
      std::string detail = "decides other traffic";
      if (old->second.entries != fact.entries) {
        detail += fmt::format(": {} verdict entries, was {}", fact.entries, old->second.entries);
      }
      changes.push_back({RuleChange::Kind::Changed, name, old->second.verdict, fact.verdict,
                         fact.location, detail});
    }
  }
  for (const auto& [name, fact] : old_rules) {
    if (new_rules.count(name) == 0) {
      changes.push_back({RuleChange::Kind::Removed, name, fact.verdict, Verdict::None,
                         fact.location, ""});
    }
  }
  std::sort(changes.begin(), changes.end(),
            [](const RuleChange& a, const RuleChange& b) { return a.rule < b.rule; });
  return changes;
}

std::string parentOf(const std::string& cgroup) {
  auto slash = cgroup.rfind('/');
  return slash == std::string::npos ? std::string() : cgroup.substr(0, slash);
}

// The workload of every cgroup as the kernel finds it: the cgroup's own, else its deepest
// selected ancestor's. Parents are looked up before children because a parent's path sorts
// before its children's.
class CgroupOwners {
public:
  explicit CgroupOwners(const CompiledPolicy& policy) : policy_(policy) {}

  const std::string& of(const std::string& cgroup) {
    if (auto known = owner_.find(cgroup); known != owner_.end()) {
      return known->second;
    }
    std::string owner;
    if (const auto* workload = workloadOfCgroup(policy_, cgroup)) {
      owner = workload->name;
    } else if (!cgroup.empty()) {
      owner = of(parentOf(cgroup));
    }
    return owner_.emplace(cgroup, std::move(owner)).first->second;
  }

private:
  const CompiledPolicy& policy_;
  std::unordered_map<std::string, std::string> owner_;
};

std::vector<CgroupChange> diffCgroups(const CompiledPolicy& running, const CompiledPolicy& proposed,
                                      std::vector<std::string> cgroups) {
  std::sort(cgroups.begin(), cgroups.end());
  CgroupOwners before(running);
  CgroupOwners after(proposed);
  std::vector<CgroupChange> changes;
  // A cgroup whose change is its parent's is folded into the parent's line: a workload of
  // `system.slice` would otherwise list every service below it.
  std::unordered_map<std::string, size_t> line_of;
  for (const auto& cgroup : cgroups) {
    const std::string& old_workload = before.of(cgroup);
    const std::string& new_workload = after.of(cgroup);
    if (old_workload == new_workload) {
      continue;
    }
    if (!cgroup.empty()) {
      auto parent = line_of.find(parentOf(cgroup));
      if (parent != line_of.end() && changes[parent->second].old_workload == old_workload &&
          changes[parent->second].new_workload == new_workload) {
        changes[parent->second].cgroups_below += 1;
        line_of.emplace(cgroup, parent->second);
        continue;
      }
    }
    line_of.emplace(cgroup, changes.size());
    changes.push_back({cgroup, old_workload, new_workload, 0});
  }
  return changes;
}

bool passes(Verdict verdict) { return verdict != Verdict::Deny; }

}  // namespace

const char* pathProtocolName(PathProtocol protocol) {
  switch (protocol) {
    case PathProtocol::Any: return "any";
    case PathProtocol::Tcp: return "tcp";
    case PathProtocol::Udp: return "udp";
    case PathProtocol::Icmp: return "icmp";
    case PathProtocol::Icmpv6: return "icmpv6";
    case PathProtocol::Other: return "other";
  }
  return "?";
}

bool PathChange::opens() const { return !passes(old_verdict) && passes(new_verdict); }

bool PathChange::closes() const { return passes(old_verdict) && !passes(new_verdict); }

PolicyDiff diffPolicies(const CompiledPolicy& running, const CompiledPolicy& proposed,
                        const std::vector<std::string>& cgroups) {
  Side before(running);
  Side after(proposed);
  PolicyDiff diff;
  diff.rules = diffRules(before, after);
  diff.cgroups = diffCgroups(running, proposed, cgroups);

  // A removed workload's paths would all read "opens ... unmanaged", port by port, although its
  // cgroups may now be another workload's: what they become is in `cgroups` instead.
  std::set<std::string> workloads;
  for (const auto& workload : running.workloads) {
    if (after.workload(workload.name) != nullptr) {
      workloads.insert(workload.name);
    } else if (workload.egress_managed || workload.ingress_managed) {
      diff.removed_workloads.push_back(workload.name);
    }
  }
  std::sort(diff.removed_workloads.begin(), diff.removed_workloads.end());
  for (const auto& workload : proposed.workloads) {
    workloads.insert(workload.name);
  }
  for (const auto& name : workloads) {
    for (Direction direction : {Direction::Egress, Direction::Ingress}) {
      diffWorkload(before, after, name, direction, diff.paths);
    }
  }
  return diff;
}

}  // namespace mseg::policy
