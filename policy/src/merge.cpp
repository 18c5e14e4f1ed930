// The merge step of a policy made of several files: one Policy out of the files in load order,
// and the checks that need more than one file. Checks within one file are the parser's.
#include <fmt/format.h>

#include <map>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "mseg/policy/policy.hpp"

namespace mseg::policy {
namespace {

// Where something is defined: the file and the place in it.
struct Place {
  const std::string* source = nullptr;
  Position position;
  size_t file = 0;  // index in load order

  std::string toString() const {
    return fmt::format("{}:{}:{}", *source, position.line, position.column);
  }
};

using LabelKeys = std::unordered_set<std::string_view>;

template <typename Spec>
void addLabelKeys(const std::vector<Spec>& specs, LabelKeys& keys) {
  for (const auto& spec : specs) {
    for (const auto& label : spec.labels) {
      keys.insert(label.first);
    }
  }
}

class PolicyMerger {
public:
  PolicyMerger(std::string_view source_name, Diagnostics& out, const Policy* previous)
      : out_(out), previous_(previous) {
    policy_.source_name = std::string(source_name);
  }

  Policy run(const std::vector<std::shared_ptr<const PolicyFile>>& files) {
    reserve(files);
    for (size_t i = 0; i < files.size(); ++i) {
      const PolicyFile& file = *files[i];
      for (const auto& workload : file.workloads) {
        checkName(workload_names_, "workload", workload.name,
                  {&workload.source, workload.position, i});
        policy_.workloads.push_back(workload);
      }
      for (const auto& entry : file.inventory) {
        checkName(inventory_names_, "inventory entry", entry.name,
                  {&entry.source, entry.position, i});
        checkCidrs(entry, i);
        policy_.inventory.push_back(entry);
      }
      for (const auto& segment : file.segments) {
        checkName(segment_names_, "segment", segment->name,
                  {&segment->source, segment->position, i});
        policy_.segments.push_back(segment);
      }
    }
    policy_.files = files;
    checkSelectorKeys(files);
    return std::move(policy_);
  }

private:
  void reserve(const std::vector<std::shared_ptr<const PolicyFile>>& files) {
    size_t workloads = 0;
    size_t inventory = 0;
    size_t segments = 0;
    for (const auto& file : files) {
      workloads += file->workloads.size();
      inventory += file->inventory.size();
      segments += file->segments.size();
    }
    policy_.workloads.reserve(workloads);
    policy_.inventory.reserve(inventory);
    policy_.segments.reserve(segments);
    workload_names_.reserve(workloads);
    inventory_names_.reserve(inventory);
    segment_names_.reserve(segments);
  }

  // Names are views into the files, which outlive the merge. A name used twice within one file
  // was reported by the parser already.
  void checkName(std::unordered_map<std::string_view, Place>& seen, std::string_view what,
                 const std::string& name, Place place) {
    auto [it, inserted] = seen.try_emplace(name, place);
    if (!inserted && it->second.file != place.file) {
      out_.error(*place.source, place.position,
                 fmt::format("duplicate {} name `{}`; it is first defined at {}", what, name,
                             it->second.toString()));
    }
  }

  // The parser drops a CIDR listed twice within its file, so every repeat found here is
  // across files.
  void checkCidrs(const InventorySpec& entry, size_t file) {
    for (const auto& cidr : entry.cidrs) {
      auto [it, inserted] = cidr_owners_.try_emplace(
          {cidr.cidr.address, cidr.cidr.prefix_len},
          std::pair(&entry.name, Place{&entry.source, cidr.position, file}));
      if (!inserted) {
        out_.error(
            entry.source, cidr.position,
            fmt::format("CIDR {} is already listed by inventory entry `{}` at {}",
                        formatCidr(cidr.cidr), *it->second.first, it->second.second.toString()));
      }
    }
  }

  // A key nobody defines is almost always a typo, and it would silently match nothing. The
  // check only fails when a key goes missing, so while every key of `previous` is still
  // defined, segments it held passed already and only new ones need a look.
  void checkSelectorKeys(const std::vector<std::shared_ptr<const PolicyFile>>& files) {
    LabelKeys keys;
    for (const auto& file : files) {
      addLabelKeys(file->workloads, keys);
      addLabelKeys(file->inventory, keys);
    }

    std::unordered_set<const PolicyFile*> checked_before;
    if (previous_ != nullptr && keepsEveryKey(*previous_, keys)) {
      for (const auto& file : previous_->files) {
        checked_before.insert(file.get());
      }
    }
    for (const auto& file : files) {
      if (checked_before.count(file.get()) == 0) {
        for (const auto& segment : file->segments) {
          checkSegmentKeys(*segment, keys);
        }
      }
    }
  }

  static bool keepsEveryKey(const Policy& previous, const LabelKeys& keys) {
    LabelKeys previous_keys;
    for (const auto& file : previous.files) {
      addLabelKeys(file->workloads, previous_keys);
      addLabelKeys(file->inventory, previous_keys);
    }
    for (std::string_view key : previous_keys) {
      if (keys.count(key) == 0) {
        return false;
      }
    }
    return true;
  }

  void checkSegmentKeys(const SegmentSpec& segment, const LabelKeys& keys) {
    for (const auto& rule : segment.rules) {
      for (const Selector* selector : {&rule.from, &rule.to}) {
        for (const auto& requirement : selector->requirements) {
          if (keys.count(requirement.key) == 0) {
            out_.error(segment.source, requirement.position,
                       fmt::format("label key `{}` is defined by no workload or inventory entry; "
                                   "the selector can never match",
                                   requirement.key));
          }
        }
      }
    }
  }

  Diagnostics& out_;
  const Policy* previous_;
  Policy policy_;
  std::unordered_map<std::string_view, Place> workload_names_;
  std::unordered_map<std::string_view, Place> inventory_names_;
  std::unordered_map<std::string_view, Place> segment_names_;
  std::map<std::pair<Address, uint8_t>, std::pair<const std::string*, Place>> cidr_owners_;
};

}  // namespace

Result<Policy> mergePolicyFiles(const std::vector<std::shared_ptr<const PolicyFile>>& files,
                                std::string_view source_name, Diagnostics& out,
                                const Policy* previous) {
  size_t errors_before = out.errorCount();
  Policy policy = PolicyMerger(source_name, out, previous).run(files);
  size_t errors = out.errorCount() - errors_before;
  if (errors > 0) {
    return Error::invalid(fmt::format("{}: {}", source_name, countErrors(errors)));
  }
  return policy;
}

}  // namespace mseg::policy
