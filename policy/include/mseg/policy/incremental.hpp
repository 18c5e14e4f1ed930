// Compiling a change of a few rules without compiling the whole policy again.
//
// A 100,000-rule policy compiles in tens of milliseconds, too slow for a one-rule change that
// must enforce within 10 ms. compileIndexed() keeps, next to the compiled policy, the raw and
// resolved entries of every (direction, workload) bucket; compileChange() then recompiles only
// the rules that differ between that policy and the next one, re-resolves only the
// (direction, workload, peer) groups those rules reach, and returns the entries that differ.
//
// The change compiler is a fast path, not a second source of truth: the agent enforces its
// answer at once and then compiles the new policy in full, which must give the same kernel
// content (a difference is logged as an error and corrected).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "mseg/policy/compiled.hpp"
#include "mseg/policy/diagnostics.hpp"
#include "mseg/policy/policy.hpp"
#include "mseg/result.hpp"

namespace mseg::policy {

// What compileChange needs of a compiled policy; opaque outside the policy library.
struct CompileIndex;

struct IndexedPolicy {
  CompiledPolicy compiled;
  std::shared_ptr<const CompileIndex> index;  // keeps `policy` alive
};

// compilePolicy, and the index for compiling later changes of `policy` quickly.
Result<IndexedPolicy> compileIndexed(std::shared_ptr<const Policy> policy, Diagnostics& out);

// The difference between the compiled base policy and the next one.
struct CompiledChange {
  // Entries new or different in the next policy. rule_index is the base's index for rules
  // the change kept, or the index of one of `added_rules`.
  std::vector<VerdictEntry> upserted;
  std::vector<VerdictEntry> removed;  // entries gone; only their key fields matter
  // Rules new or changed in the next policy, indexed after the base's last rule.
  std::vector<CompiledRule> added_rules;
  std::vector<uint32_t> removed_rules;  // base indices of rules gone or changed
  // Workloads whose managed or audit-only directions differ, with the next policy's flags.
  std::vector<CompiledWorkload> changed_workloads;
};

// Why compileChange could not take the fast path (the caller then compiles in full).
struct NotIncremental {
  std::string reason;
};

// The change from `base` to `next` when `next` differs from the base's policy only in the rules
// of some files: the same files in the same order, each file's workloads and inventory
// unchanged. Files are compared by pointer (PolicySource gives an unchanged file the same
// object). Otherwise, or when a file's new rules do not fit between their neighbours' ranks,
// NotIncremental with the reason. `next` must be valid (parsed and merged without error).
std::variant<CompiledChange, NotIncremental> compileChange(const CompileIndex& base,
                                                           const Policy& next);

}  // namespace mseg::policy
