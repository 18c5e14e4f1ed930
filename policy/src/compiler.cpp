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
#include <pwd.h>
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

#include "compile_parts.hpp"
#include "mseg/policy/compiler.hpp"
#include "compile_index.hpp"

namespace mseg::policy {
namespace {

using namespace detail;

struct ShadowState {
  bool has_entries = false;
  bool allows_something = false;  // some entry of the rule wins over every deny
  std::vector<uint32_t> by;       // the deny rules it loses to, distinct
};

struct DirectionState {
  uint32_t managing = 0;   // rules that select the workload on this side
  uint32_t enforcing = 0;  // those of them in enforce mode; none: the default deny only audits
};

class Compiler {
public:
  // With `index`, also fills it for compiling later changes (incremental.hpp).
  Compiler(const Policy& policy, Diagnostics& out, CompileIndex* index = nullptr)
      : policy_(policy), out_(out), index_(index) {}

  CompiledPolicy run() {
    compiled_.source_name = policy_.source_name;
    compiled_.content_hash = policy_.content_hash;
    warnIfNoRules();
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
    if (index_ != nullptr) {
      fillIndex();
    }
    return std::move(compiled_);
  }

private:
  // `source` is the file the place is in: a spec's own, or for a rule its segment's.
  void warn(const std::string& source, Position position, std::string message) {
    out_.warning(source, position, std::move(message));
  }

  // Valid, but applying it ends all enforcement: only rules make a workload managed.
  void warnIfNoRules() {
    const bool no_rules =
        std::all_of(policy_.segments.begin(), policy_.segments.end(),
                    [](const auto& segment) { return segment->rules.empty(); });
    if (no_rules) {
      warn(policy_.source_name, Position{},
           "policy has no rules: nothing is enforced; every workload is unmanaged and all its "
           "traffic passes");
    }
  }

  void compileWorkloads() {
    size_t count = policy_.workloads.size();
    egress_.resize(count);
    ingress_.resize(count);
    buckets_.resize(2 * count);
    if (index_ != nullptr) {
      index_->raw.resize(2 * count);
      index_->resolved.resize(2 * count);
    }
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
            spec.source, spec.position,
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
              spec.source, user.position,
              fmt::format(
                  "user `{}` of workload `{}` could not be looked up: {}; it is left out on this host",
                  user.name, spec.name, std::strerror(found.err)));
        } else if (!found.uid) {
          warn(spec.source, user.position,
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
  void warnIfDenyMissesNestedPrefixes(const std::string& source, const std::string& name,
                                      const Selector& side, const std::vector<uint32_t>& peers) {
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
        warn(source, side.position,
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
      count += segment->rules.size();
    }
    if (count > kMaxRuleIndex - kFirstRuleIndex) {
      out_.error(policy_.source_name, {},
                 fmt::format("the policy has {} rules; at most {} are supported", count,
                             kMaxRuleIndex - kFirstRuleIndex));
      return false;
    }

    compiled_.rules.reserve(count);
    order_shift_ = orderShift(static_cast<uint32_t>(count + kFirstRuleIndex));
    for (const auto& segment : policy_.segments) {
      compiled_.segments.push_back({segment->name, segment->mode == Mode::Audit,
                                    static_cast<uint32_t>(segment->rules.size())});
      for (const auto& rule : segment->rules) {
        compileRule(*segment, rule);
      }
    }
    return true;
  }

  void compileRule(const SegmentSpec& segment, const RuleSpec& rule) {
    Mode mode = rule.mode.value_or(segment.mode);
    Verdict verdict = verdictOf(segment, rule);
    uint32_t index = kFirstRuleIndex + static_cast<uint32_t>(compiled_.rules.size());
    std::string name = fmt::format("{}/{}", segment.name, rule.name);
    compiled_.rules.push_back(
        {index, segment.name, name, verdict,
         fmt::format("{}:{}:{}", segment.source, rule.position.line, rule.position.column)});
    rule_specs_.push_back({&segment, &rule});
    shadows_.emplace_back();

    const std::vector<uint32_t>& local_from = local_index_.match(rule.from);
    const std::vector<uint32_t>& local_to = local_index_.match(rule.to);
    const std::vector<uint32_t>& peers_from = peersOf(rule.from);
    const std::vector<uint32_t>& peers_to = peersOf(rule.to);
    warnIfSelectsNothing(segment.source, name, rule, local_from, local_to, peers_from, peers_to);
    if (rule.action == Action::Deny) {
      warnIfDenyMissesNestedPrefixes(segment.source, name, rule.from, peers_from);
      warnIfDenyMissesNestedPrefixes(segment.source, name, rule.to, peers_to);
    }

    std::vector<L4Key> keys = l4KeysOf(rule);
    RawEntry entry{0, rankOf(verdict, index << order_shift_), index};
    for (uint32_t workload : local_from) {
      size_t slot = workload - kFirstWorkloadIdentity;
      manage(egress_[slot], mode);
      addEntries(buckets_[slot], peers_to, keys, entry);
    }
    for (uint32_t workload : local_to) {
      size_t slot = workload - kFirstWorkloadIdentity;
      manage(ingress_[slot], mode);
      addEntries(buckets_[policy_.workloads.size() + slot], peers_from, keys, entry);
    }
  }

  void warnIfSelectsNothing(const std::string& source, const std::string& name,
                            const RuleSpec& rule,
                            const std::vector<uint32_t>& local_from,
                            const std::vector<uint32_t>& local_to,
                            const std::vector<uint32_t>& peers_from,
                            const std::vector<uint32_t>& peers_to) {
    bool warned = false;
    if (local_from.empty() && peers_from.empty()) {
      warn(source, rule.from.position,
           fmt::format("`from` of rule `{}` matches no workload or inventory entry on this host",
                       name));
      warned = true;
    }
    if (local_to.empty() && peers_to.empty()) {
      warn(source, rule.to.position,
           fmt::format("`to` of rule `{}` matches no workload or inventory entry on this host",
                       name));
      warned = true;
    }
    if (!warned && local_from.empty() && local_to.empty()) {
      warn(
          source, rule.position,
          fmt::format(
              "rule `{}` selects no workload of this host on either side, so it has no effect here",
              name));
    }
  }

  static void manage(DirectionState& state, Mode mode) {
    state.managing += 1;
    state.enforcing += mode == Mode::Enforce ? 1 : 0;
  }

  static void addEntries(std::vector<RawEntry>& bucket, const std::vector<uint32_t>& peers,
                         const std::vector<L4Key>& keys, RawEntry entry) {
    for (uint32_t peer : peers) {
      for (const auto& key : keys) {
        entry.key = packKey(peer, key.protocol, key.port, key.prefix_len);
        bucket.push_back(entry);
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
    std::sort(raw.begin(), raw.end());
    std::vector<RawEntry> merged = detail::resolveBucket(raw);
    recordShadowing(raw, merged);

    for (const auto& entry : merged) {
      compiled_.entries.push_back(verdictEntryOf(index, policy_.workloads.size(), entry));
    }
    if (index_ != nullptr) {
      index_->raw[index] = std::move(raw);
      index_->resolved[index] = std::move(merged);
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
      ShadowState& state = shadows_[entry.rule - kFirstRuleIndex];
      state.has_entries = true;
      if (state.allows_something) {
        continue;
      }

      std::optional<uint32_t> by;
      if (verdictOfRank(resolved->rank) > Verdict::Allow) {
        by = resolved->rule;
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
        found = it->rule;
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
      warn(rule_specs_[i].first->source, rule_specs_[i].second->position,
           fmt::format("rule `{}` is wholly shadowed by deny rule{} {}; it never allows anything",
                       compiled_.rules[i].name, by.size() == 1 ? "" : "s", fmt::join(names, ", ")));
    }
  }

  void applyDirectionStates() {
    for (size_t i = 0; i < compiled_.workloads.size(); ++i) {
      CompiledWorkload& workload = compiled_.workloads[i];
      setDirectionFlags(workload, Direction::Egress, egress_[i].managing, egress_[i].enforcing);
      setDirectionFlags(workload, Direction::Ingress, ingress_[i].managing,
                        ingress_[i].enforcing);
    }
  }

  // Hands what the change compiler needs over to the index; run() is the last use of them.
  void fillIndex() {
    CompileIndex& index = *index_;
    index.workloads = compiled_.workloads;
    index.rule_count = compiled_.rules.size();
    index.order_shift = order_shift_;
    index.rules.reserve(rule_specs_.size());
    for (const auto& [segment, rule] : rule_specs_) {
      index.rules.push_back({segment, rule});
    }
    index.local_index = std::move(local_index_);
    index.peer_index = std::move(peer_index_);
    for (size_t i = 0; i < egress_.size(); ++i) {
      index.managing[0].push_back(egress_[i].managing);
      index.enforcing[0].push_back(egress_[i].enforcing);
      index.managing[1].push_back(ingress_[i].managing);
      index.enforcing[1].push_back(ingress_[i].enforcing);
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
  // By rule index - kFirstRuleIndex.
  std::vector<std::pair<const SegmentSpec*, const RuleSpec*>> rule_specs_;
  CompileIndex* index_ = nullptr;
  unsigned order_shift_ = 0;
  std::vector<ShadowState> shadows_;         // by rule index - kFirstRuleIndex
  struct NestedPrefix {
    uint32_t peer;           // the entry whose prefix lies inside
    const CidrSpec* outer;   // the containing prefix, as written
    const CidrSpec* inner;
  };
  std::vector<std::vector<NestedPrefix>> nested_in_;  // by peer id - kFirstPeerIdentity
};

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

Result<IndexedPolicy> compileIndexed(std::shared_ptr<const Policy> policy, Diagnostics& out) {
  size_t errors_before = out.errorCount();
  auto index = std::make_shared<CompileIndex>();
  index->policy = policy;
  CompiledPolicy compiled = Compiler(*policy, out, index.get()).run();
  size_t errors = out.errorCount() - errors_before;
  if (errors > 0) {
    return Error::invalid(fmt::format("{}: {}", policy->source_name, countErrors(errors)));
  }
  return IndexedPolicy{std::move(compiled), std::move(index)};
}

Result<CompiledPolicy> loadPolicyText(std::string_view text, std::string_view source_name,
                                      Diagnostics& out) {
  auto policy = parsePolicy(text, source_name, out);
  if (!policy) {
    return policy.error();
  }
  return compilePolicy(*policy, out);
}

Result<Policy> readPolicy(std::string_view path, Diagnostics& out, LoadTimes* times) {
  return PolicySource(std::string(path)).load(out, times);
}

Result<CompiledPolicy> loadPolicyFile(std::string_view path, Diagnostics& out, LoadTimes* times) {
  LoadTimes local;
  LoadTimes& spent = times != nullptr ? *times : local;
  auto policy = readPolicy(path, out, &spent);
  if (!policy) {
    return policy.error();
  }
  auto started = std::chrono::steady_clock::now();
  auto compiled = compilePolicy(*policy, out);
  spent.compile = std::chrono::steady_clock::now() - started;
  return compiled;
}

}  // namespace mseg::policy
