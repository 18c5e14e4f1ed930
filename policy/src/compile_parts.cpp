#include "compile_parts.hpp"

#include "mseg/policy/compiler.hpp"

#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <set>

namespace mseg::policy::detail {
namespace {

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

// Overlapping or adjacent ranges merge first, so the blocks stay minimal for the union.
std::vector<PortRange> mergedRanges(std::vector<PortRange> ranges) {
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
  return merged;
}

// Gives each entry the best rank (and its rule) of the entries covering it in its peer group.
// Doing it in place is safe: an entry already raised holds the best of its own covering keys,
// all of which also cover every key it covers.
void resolveGroups(std::vector<RawEntry>& merged) {
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
        if (auto it = findKey(group_begin, group_end, key);
            it != group_end && it->rank < entry->rank) {
          entry->rank = it->rank;
          entry->rule = it->rule;
        }
      });
    }
    group_begin = group_end;
  }
}

}  // namespace

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
  for (const auto& range : mergedRanges(rule.ports)) {
    for (const auto& block : portBlocks(range.first, range.last)) {
      keys.push_back({rule.protocol, block.port, block.prefix_len});
    }
  }
  return keys;
}

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

Verdict verdictOf(const SegmentSpec& segment, const RuleSpec& rule) {
  if (rule.action == Action::Allow) {
    return Verdict::Allow;
  }
  return rule.mode.value_or(segment.mode) == Mode::Audit ? Verdict::Audit : Verdict::Deny;
}

std::vector<RawEntry> resolveBucket(const std::vector<RawEntry>& sorted_raw) {
  std::vector<RawEntry> merged;
  merged.reserve(sorted_raw.size());
  for (const auto& entry : sorted_raw) {
    if (merged.empty() || merged.back().key != entry.key) {
      merged.push_back(entry);
    }
  }
  resolveGroups(merged);
  return merged;
}

void LabelIndex::add(uint32_t id, const Labels& labels) {
  for (const auto& [key, value] : labels) {
    index_[key][value].push_back(id);
  }
}

const std::vector<uint32_t>& LabelIndex::match(const Selector& selector) {
  auto [it, inserted] = cache_.try_emplace(&selector);
  if (inserted) {
    it->second = compute(selector);
  }
  return it->second;
}

// Starts from the requirement with the fewest candidates and filters by the others, so a
// typical {app: x, tier: y} costs a few binary searches rather than a pass over every id
// carrying `tier`.
std::vector<uint32_t> LabelIndex::compute(const Selector& selector) const {
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

// The ascending ids having one of the requirement's values; several values are merged into a
// new list kept in `merged`.
const std::vector<uint32_t>* LabelIndex::idsWithAnyValue(
    const LabelRequirement& requirement, std::vector<std::vector<uint32_t>>& merged) const {
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

size_t LabelIndex::SelectorHash::operator()(const Selector* selector) const {
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

bool LabelIndex::SelectorEqual::operator()(const Selector* a, const Selector* b) const {
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

}  // namespace mseg::policy::detail
