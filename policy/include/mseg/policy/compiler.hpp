// From a validated Policy to the numbers the kernel needs (compiled.hpp), on this host.
//
// Compiling is host-specific in one way only: user names are resolved with this host's user
// database, so a workload whose users all are unknown here selects nothing here.
#pragma once

#include <chrono>
#include <cstdint>
#include <string_view>
#include <vector>

#include "mseg/policy/compiled.hpp"
#include "mseg/policy/diagnostics.hpp"
#include "mseg/policy/policy.hpp"
#include "mseg/policy/source.hpp"
#include "mseg/result.hpp"

namespace mseg::policy {

// Compiles a policy returned by parsePolicy. Host-specific findings (unknown users, rules that
// select nothing here, rules wholly shadowed by a deny) are warnings in `out`; the result
// fails (EINVAL, "N errors") only if compiling reported an error. Thread-safe for distinct
// arguments; getpwnam_r is reentrant.
Result<CompiledPolicy> compilePolicy(const Policy& policy, Diagnostics& out);

// Reads, parses, validates and compiles a policy file or directory (a one-shot PolicySource,
// mseg/policy/source.hpp); `path` names it in diagnostics. Fails with the errno of a failed
// read, or EINVAL with the error count.
Result<CompiledPolicy> loadPolicyFile(std::string_view path, Diagnostics& out,
                                      LoadTimes* times = nullptr);

// Reads, parses and validates a policy file or directory without compiling it (times.compile
// stays 0); a one-shot PolicySource.
Result<Policy> readPolicy(std::string_view path, Diagnostics& out, LoadTimes* times = nullptr);

// Same as loadPolicyFile for a text already in memory.
Result<CompiledPolicy> loadPolicyText(std::string_view text, std::string_view source_name,
                                      Diagnostics& out);

// A block of 2^(16 - prefix_len) ports starting at `port`, which is aligned to the block size.
struct PortBlock {
  uint16_t port = 0;
  uint8_t prefix_len = 16;
};

// The fewest aligned blocks that together are exactly [first, last] (first <= last).
std::vector<PortBlock> portBlocks(uint16_t first, uint16_t last);

// Whether a process with `uid` in the cgroup `cgroup_path` (relative to the attach cgroup, no
// leading slash) belongs to `workload`: one of its cgroup globs matches (fnmatch with
// FNM_PATHNAME, so `*` stays within one path component) and its uid is one of the workload's.
// No cgroup patterns means any cgroup, no uids any user, except when the workload named users
// of which none exists on this host: then it selects nothing.
bool workloadSelects(const CompiledWorkload& workload, std::string_view cgroup_path, uint32_t uid);

// The workload a cgroup belongs to: the first in policy order with a cgroup glob that matches
// `cgroup_path` (as in workloadSelects); nullptr when none has. Workloads selected by user alone
// (no cgroup patterns) own no cgroup.
const CompiledWorkload* workloadOfCgroup(const CompiledPolicy& policy,
                                         std::string_view cgroup_path);

}  // namespace mseg::policy
