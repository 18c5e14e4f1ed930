// The change compiler: recompiles the rules that differ between a compiled policy and the next
// one, and re-resolves only the (direction, workload, peer) groups they reach.
//
// A group's resolved entries depend only on the raw entries of that group (compile_parts.hpp),
// so a group no changed rule reaches resolves as before. Rules keep their rank when they stay;
// a new or changed rule gets a rank between its neighbours', which the gaps the full compiler
// leaves between ranks make room for.
#include <map>
#include <optional>
#include <set>
#include <unordered_map>

#include <fmt/format.h>

#include "compile_index.hpp"

namespace mseg::policy {
namespace {

using namespace detail;
using RuleRef = CompileIndex::RuleRef;

constexpr uint64_t kOrderLimit = uint64_t{1} << kRankOrderBits;

bool sameSelector(const Selector& a, const Selector& b) {
  if (a.kind != b.kind || a.requirements.size() != b.requirements.size()) {
    return false;
  }
  for (size_t i = 0; i < a.requirements.size(); ++i) {
    if (a.requirements[i].key != b.requirements[i].key ||
        a.requirements[i].values != b.requirements[i].values) {
      return false;
    }
  }
  return true;
}

bool samePorts(const std::vector<PortRange>& a, const std::vector<PortRange>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                    [](const PortRange& x, const PortRange& y) {
                      return x.first == y.first && x.last == y.last;
                    });
}

// Whether two rules give the same entries with the same verdict; where they are written does
// not matter.
bool sameEffect(const RuleRef& a, const RuleRef& b) {
  const RuleSpec& x = *a.rule;
  const RuleSpec& y = *b.rule;
  return a.segment->name == b.segment->name && x.name == y.name &&
         verdictOf(*a.segment, x) == verdictOf(*b.segment, y) &&
         x.mode.value_or(a.segment->mode) == y.mode.value_or(b.segment->mode) &&
         x.protocol == y.protocol && samePorts(x.ports, y.ports) &&
         x.icmp_types == y.icmp_types && sameSelector(x.from, y.from) &&
         sameSelector(x.to, y.to);
}

// The rules of one stretch of the policy that changed: base rules [base_first, base_first +
// base_count) became `next`.
struct Span {
  uint32_t base_first = 0;
  uint32_t base_count = 0;
  std::vector<RuleRef> next;
};

// A rule's segment and name, which identify it in the policy.
using RuleName = std::pair<std::string_view, std::string_view>;

struct RuleNameHash {
  size_t operator()(const RuleName& name) const {
    std::hash<std::string_view> hash;
    return hash(name.first) * 31 + hash(name.second);
  }
};

// A rule the change adds, with the place it takes among the base's ranks.
struct AddedRule {
  RuleRef ref;
  uint32_t index = 0;
  uint32_t order = 0;
};

class ChangeCompiler {
public:
  explicit ChangeCompiler(const CompileIndex& base)
      : base_(base),
        workload_count_(base.workloads.size()),
        removed_(base.rule_count + kFirstRuleIndex, false),
        managing_(base.managing),
        enforcing_(base.enforcing) {}

  std::variant<CompiledChange, NotIncremental> run(const std::vector<Span>& spans) {
    for (const Span& span : spans) {
      if (auto planned = plan(span); !planned.empty()) {
        return NotIncremental{planned};
      }
    }
    for (uint32_t index = kFirstRuleIndex; index < removed_.size(); ++index) {
      if (removed_[index]) {
        change_.removed_rules.push_back(index);
        visitRule(base_.rules[index - kFirstRuleIndex], -1, nullptr);
      }
    }
    for (const AddedRule& added : added_) {
      Verdict verdict = verdictOf(*added.ref.segment, *added.ref.rule);
      RawEntry entry{0, rankOf(verdict, added.order), added.index};
      visitRule(added.ref, +1, &entry);
      change_.added_rules.push_back(
          {added.index, added.ref.segment->name,
           fmt::format("{}/{}", added.ref.segment->name, added.ref.rule->name), verdict,
           fmt::format("{}:{}:{}", added.ref.segment->source, added.ref.rule->position.line,
                       added.ref.rule->position.column)});
    }
    for (auto& [cell, additions] : cells_) {
      resolveCell(cell.first, cell.second, additions);
    }
    collectChangedWorkloads();
    return std::move(change_);
  }

private:
  // Decides which rules of the span stay (same name, same effect, still in order) and gives
  // the others places between their neighbours. Returns why not, or "" on success.
  std::string plan(const Span& span) {
    std::unordered_map<RuleName, uint32_t, RuleNameHash> base_by_name;
    base_by_name.reserve(span.base_count);
    for (uint32_t i = 0; i < span.base_count; ++i) {
      const RuleRef& ref = base_.rules[span.base_first + i - kFirstRuleIndex];
      base_by_name.emplace(std::make_pair(std::string_view(ref.segment->name),
                                          std::string_view(ref.rule->name)),
                           span.base_first + i);
      removed_[span.base_first + i] = true;
    }

    // Kept rules, by position in span.next; the others wait for a place.
    std::vector<std::optional<uint32_t>> kept(span.next.size());
    uint32_t last_kept_order = 0;
    for (size_t j = 0; j < span.next.size(); ++j) {
      const RuleRef& next = span.next[j];
      auto found = base_by_name.find({next.segment->name, next.rule->name});
      if (found == base_by_name.end()) {
        continue;
      }
      const uint32_t index = found->second;
      if (base_.orderOf(index) > last_kept_order &&
          sameEffect(base_.rules[index - kFirstRuleIndex], next)) {
        kept[j] = index;
        last_kept_order = base_.orderOf(index);
        removed_[index] = false;
      }
    }
    return placeNewRules(span, kept);
  }

  // Each run of new rules between two kept ones (or the span's ends) is spread evenly over the
  // free ranks between them.
  std::string placeNewRules(const Span& span, const std::vector<std::optional<uint32_t>>& kept) {
    uint64_t lower = span.base_first > kFirstRuleIndex ? base_.orderOf(span.base_first - 1) : 0;
    const uint32_t after = span.base_first + span.base_count;
    const uint64_t span_upper =
        after < base_.rule_count + kFirstRuleIndex ? base_.orderOf(after) : kOrderLimit;
    size_t run_begin = 0;
    for (size_t j = 0; j <= span.next.size(); ++j) {
      if (j < span.next.size() && !kept[j]) {
        continue;
      }
      const uint64_t upper = j < span.next.size() ? base_.orderOf(*kept[j]) : span_upper;
      const uint64_t count = j - run_begin;
      if (count > 0 && upper - lower <= count) {
        return fmt::format("no room for {} new rules next to rule `{}/{}`", count,
                           span.next[run_begin].segment->name, span.next[run_begin].rule->name);
      }
      for (uint64_t k = 0; k < count; ++k) {
        const uint32_t order =
            static_cast<uint32_t>(lower + (upper - lower) * (k + 1) / (count + 1));
        const uint32_t index =
            static_cast<uint32_t>(base_.rule_count + kFirstRuleIndex + added_.size());
        added_.push_back({span.next[run_begin + k], index, order});
      }
      if (j < span.next.size()) {
        lower = upper;
      }
      run_begin = j + 1;
    }
    if (base_.rule_count + added_.size() > kMaxRuleIndex - kFirstRuleIndex) {
      return "the policy would have too many rules";
    }
    return "";
  }

  std::vector<uint32_t> peersOf(const Selector& selector) const {
    switch (selector.kind) {
      case SelectorKind::Any:
        return {kPeerAny};
      case SelectorKind::World:
        return {kPeerWorld};
      case SelectorKind::Labels:
        break;
    }
    return base_.peer_index.compute(selector);
  }

  // Counts the rule's workloads in or out of their managed directions and marks the groups
  // it reaches; with `entry`, also records the raw entries it adds there.
  void visitRule(const RuleRef& ref, int delta, const RawEntry* entry) {
    const RuleSpec& rule = *ref.rule;
    const bool enforces = rule.mode.value_or(ref.segment->mode) == Mode::Enforce;
    const std::vector<L4Key> keys = l4KeysOf(rule);
    const std::vector<uint32_t> peers_from = peersOf(rule.from);
    const std::vector<uint32_t> peers_to = peersOf(rule.to);
    for (int direction = 0; direction < 2; ++direction) {
      const Selector& local = direction == 0 ? rule.from : rule.to;
      const std::vector<uint32_t>& peers = direction == 0 ? peers_to : peers_from;
      for (uint32_t workload : base_.local_index.compute(local)) {
        const size_t slot = workload - kFirstWorkloadIdentity;
        managing_[direction][slot] += delta;
        enforcing_[direction][slot] += enforces ? delta : 0;
        touched_workloads_.insert(slot);
        const size_t bucket = direction * workload_count_ + slot;
        for (uint32_t peer : peers) {
          std::vector<RawEntry>& additions = cells_[{bucket, peer}];
          if (entry == nullptr) {
            continue;
          }
          for (const L4Key& key : keys) {
            RawEntry added = *entry;
            added.key = packKey(peer, key.protocol, key.port, key.prefix_len);
            additions.push_back(added);
          }
        }
      }
    }
  }

  // The entries of one peer's group in a bucket sorted by key.
  static std::pair<size_t, size_t> groupRange(const std::vector<RawEntry>& sorted, uint32_t peer) {
    auto by_key = [](const RawEntry& entry, uint64_t key) { return entry.key < key; };
    auto begin = std::lower_bound(sorted.begin(), sorted.end(), uint64_t{peer} << 32, by_key);
    auto end = std::lower_bound(begin, sorted.end(), (uint64_t{peer} + 1) << 32, by_key);
    return {static_cast<size_t>(begin - sorted.begin()), static_cast<size_t>(end - sorted.begin())};
  }

  void resolveCell(size_t bucket, uint32_t peer, std::vector<RawEntry>& additions) {
    const std::vector<RawEntry>& base_raw = base_.raw[bucket];
    auto [raw_begin, raw_end] = groupRange(base_raw, peer);
    std::vector<RawEntry> raw = std::move(additions);
    for (size_t i = raw_begin; i < raw_end; ++i) {
      if (!removed_[base_raw[i].rule]) {
        raw.push_back(base_raw[i]);
      }
    }
    std::sort(raw.begin(), raw.end());
    const std::vector<RawEntry> next = resolveBucket(raw);

    const std::vector<RawEntry>& base_resolved = base_.resolved[bucket];
    auto [old_begin, old_end] = groupRange(base_resolved, peer);
    diffGroup(bucket, base_resolved.begin() + old_begin, base_resolved.begin() + old_end, next);
  }

  void diffGroup(size_t bucket, std::vector<RawEntry>::const_iterator old_it,
                 std::vector<RawEntry>::const_iterator old_end, const std::vector<RawEntry>& next) {
    auto next_it = next.begin();
    while (old_it != old_end || next_it != next.end()) {
      if (next_it == next.end() || (old_it != old_end && old_it->key < next_it->key)) {
        change_.removed.push_back(verdictEntryOf(bucket, workload_count_, *old_it++));
      } else if (old_it == old_end || next_it->key < old_it->key) {
        change_.upserted.push_back(verdictEntryOf(bucket, workload_count_, *next_it++));
      } else {
        if (verdictOfRank(old_it->rank) != verdictOfRank(next_it->rank) ||
            old_it->rule != next_it->rule) {
          change_.upserted.push_back(verdictEntryOf(bucket, workload_count_, *next_it));
        }
        ++old_it;
        ++next_it;
      }
    }
  }

  void collectChangedWorkloads() {
    for (size_t slot : touched_workloads_) {
      CompiledWorkload workload = base_.workloads[slot];
      setDirectionFlags(workload, Direction::Egress, managing_[0][slot], enforcing_[0][slot]);
      setDirectionFlags(workload, Direction::Ingress, managing_[1][slot], enforcing_[1][slot]);
      const CompiledWorkload& before = base_.workloads[slot];
      if (workload.egress_managed != before.egress_managed ||
          workload.egress_audit != before.egress_audit ||
          workload.ingress_managed != before.ingress_managed ||
          workload.ingress_audit != before.ingress_audit) {
        change_.changed_workloads.push_back(std::move(workload));
      }
    }
  }

  const CompileIndex& base_;
  const size_t workload_count_;
  std::vector<bool> removed_;  // by base rule index: its entries leave
  std::vector<AddedRule> added_;
  std::array<std::vector<uint32_t>, 2> managing_;
  std::array<std::vector<uint32_t>, 2> enforcing_;
  std::set<size_t> touched_workloads_;
  // (bucket, peer) groups the change reaches, with the raw entries added there.
  std::map<std::pair<size_t, uint32_t>, std::vector<RawEntry>> cells_;
  CompiledChange change_;
};

bool sameUsers(const std::vector<UserSpec>& a, const std::vector<UserSpec>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                    [](const UserSpec& x, const UserSpec& y) {
                      return x.name == y.name && x.uid == y.uid;
                    });
}

bool sameWorkloads(const std::vector<WorkloadSpec>& a, const std::vector<WorkloadSpec>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                    [](const WorkloadSpec& x, const WorkloadSpec& y) {
                      return x.name == y.name && x.cgroups == y.cgroups &&
                             sameUsers(x.users, y.users) && x.labels == y.labels;
                    });
}

bool sameInventory(const std::vector<InventorySpec>& a, const std::vector<InventorySpec>& b) {
  auto same_cidrs = [](const std::vector<CidrSpec>& x, const std::vector<CidrSpec>& y) {
    return std::equal(x.begin(), x.end(), y.begin(), y.end(),
                      [](const CidrSpec& c, const CidrSpec& d) {
                        return c.cidr.address == d.cidr.address &&
                               c.cidr.prefix_len == d.cidr.prefix_len;
                      });
  };
  return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                    [&](const InventorySpec& x, const InventorySpec& y) {
                      return x.name == y.name && same_cidrs(x.cidrs, y.cidrs) &&
                             x.labels == y.labels;
                    });
}

// Whether each workload's user names resolve on this host as they did when the base was
// compiled: a user created or deleted since changes which processes a workload selects,
// which only a full compile takes into account.
bool usersResolveAsBefore(const CompileIndex& base) {
  for (size_t i = 0; i < base.workloads.size(); ++i) {
    std::vector<uint32_t> uids;
    std::vector<std::string> unresolved;
    for (const auto& user : base.policy->workloads[i].users) {
      std::optional<uint32_t> uid = user.uid ? user.uid : lookupUser(user.name).uid;
      if (!uid) {
        unresolved.push_back(user.name);
      } else if (std::find(uids.begin(), uids.end(), *uid) == uids.end()) {
        uids.push_back(*uid);
      }
    }
    if (uids != base.workloads[i].uids || unresolved != base.workloads[i].unresolved_users) {
      return false;
    }
  }
  return true;
}

// The stretches of rules that differ between the base policy and `next`. A segment `next`
// shares with the base (the same object: PolicySource hands out the segments of an unchanged
// file again) is unchanged and anchors the comparison; the segments between two anchors form
// one stretch. Stretches with no base rule between them are joined, so that every stretch is
// bounded by rules that stay.
std::vector<Span> changedSpans(const CompileIndex& base, const Policy& next) {
  const auto& before = base.policy->segments;
  std::unordered_map<const SegmentSpec*, size_t> position_of;
  std::vector<uint32_t> first_rule_of(before.size() + 1, kFirstRuleIndex);
  for (size_t i = 0; i < before.size(); ++i) {
    position_of.emplace(before[i].get(), i);
    first_rule_of[i + 1] = first_rule_of[i] + static_cast<uint32_t>(before[i]->rules.size());
  }

  std::vector<Span> spans;
  Span pending;
  size_t cursor = 0;  // the first base segment not yet matched or covered
  auto close_span = [&](size_t base_end) {
    pending.base_first = first_rule_of[cursor];
    pending.base_count = first_rule_of[base_end] - first_rule_of[cursor];
    if (pending.base_count > 0 || !pending.next.empty()) {
      if (!spans.empty() &&
          spans.back().base_first + spans.back().base_count == pending.base_first) {
        Span& previous = spans.back();
        previous.base_count += pending.base_count;
        previous.next.insert(previous.next.end(), pending.next.begin(), pending.next.end());
      } else {
        spans.push_back(std::move(pending));
      }
    }
    pending = Span{};
  };
  for (const auto& segment : next.segments) {
    auto found = position_of.find(segment.get());
    if (found != position_of.end() && found->second >= cursor) {
      close_span(found->second);
      cursor = found->second + 1;
      continue;
    }
    for (const auto& rule : segment->rules) {
      pending.next.push_back({segment.get(), &rule});
    }
  }
  close_span(before.size());
  return spans;
}

}  // namespace

std::variant<CompiledChange, NotIncremental> compileChange(const CompileIndex& base,
                                                           const Policy& next) {
  const Policy& before = *base.policy;
  if (!sameWorkloads(before.workloads, next.workloads)) {
    return NotIncremental{"workloads changed"};
  }
  if (!sameInventory(before.inventory, next.inventory)) {
    return NotIncremental{"inventory changed"};
  }
  if (!usersResolveAsBefore(base)) {
    return NotIncremental{"a user of a workload was created or deleted on this host"};
  }
  return ChangeCompiler(base).run(changedSpans(base, next));
}

}  // namespace mseg::policy
