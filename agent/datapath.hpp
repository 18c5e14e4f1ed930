// The kernel side of the agent: loads the BPF programs, pins maps and links so enforcement
// outlives the agent, adopts what a previous agent pinned, and switches policy banks
// atomically.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kernel_state.hpp"
#include "mseg/abi.h"
#include "mseg/result.hpp"

struct mseg_skel;
struct bpf_link;
struct bpf_map;
struct bpf_program;

namespace mseg::agent {

// What a bank's inner map looks like; read from the object before load, because libbpf frees
// its inner map templates once the outer maps exist.
struct BankMapSpec {
  uint32_t type = 0;  // enum bpf_map_type
  uint32_t key_size = 0;
  uint32_t value_size = 0;
  uint32_t max_entries = 0;
  uint32_t flags = 0;
};

struct DatapathOptions {
  std::string cgroup_path;  // absolute path of the cgroup v2 directory to attach to
  std::string pin_dir;      // bpffs directory for this agent's maps and links
};

struct RuleName {
  std::string name;
  uint8_t verdict = MSEG_VERDICT_NONE;
};

// What the last apply changed in the kernel and where its time went.
struct ApplyStats {
  size_t entries_written = 0;  // new or changed map entries, rule names included
  size_t entries_deleted = 0;
  std::chrono::nanoseconds diff{};   // finding what differs from the inactive bank
  std::chrono::nanoseconds write{};  // the bpf() calls, the flip included
};

class Datapath {
public:
  // Loads the programs (reusing maps pinned in pin_dir when present), prepares both policy
  // banks and reads back the policy state a previous agent left. Does not attach.
  static Result<std::unique_ptr<Datapath>> open(const DatapathOptions& options);
  ~Datapath();
  Datapath(const Datapath&) = delete;
  Datapath& operator=(const Datapath&) = delete;

  // Attaches every program to the cgroup through pinned links. Links a previous agent pinned
  // are updated in place to the new programs, so there is no moment without enforcement. Then
  // unpins maps of an older (or newer) layout that no attached program uses any more.
  Status attach();

  // Writes `desired` into the inactive bank and makes it active in one map write: when this
  // returns, every new verdict uses `desired`. Only entries that differ from what the
  // inactive bank holds are written, after waiting out programs still reading it since the
  // previous switch. Names are for counter readers.
  Status apply(BankContent desired, std::map<uint32_t, RuleName> rule_names,
               uint64_t policy_version);

  // Writes a change of a few rules: `delta` into the inactive bank, the names of rules the
  // change adds, then the switch, as apply() does, but without comparing whole banks: the
  // cost is the size of the delta. Needs both banks alike (catchUpInactiveBank), else
  // EAGAIN and nothing is written; apply() is then the way. Rules in `removed_rule_ids` lose
  // their names once no program counts under them.
  Status applyDelta(const BankDelta& delta, const std::map<uint32_t, RuleName>& added_rule_names,
                    const std::vector<uint32_t>& removed_rule_ids, uint64_t policy_version);

  // Turns flow reporting in the programs on or off at once (datapath_options.cpp); verdicts
  // and per-rule counters are unaffected. Returns whether it was on, as a previous agent may
  // have left it.
  Result<bool> setFlowTelemetry(bool enabled);
  // With telemetry off the sock_ops program has nothing to do: detaching it spares every TCP
  // socket in the cgroup its calls. attach() attaches it again (telemetry on). Call after
  // attach(); nothing to do when it is not attached.
  Status detachSockOps();

  const ApplyStats& lastApplyStats() const { return last_apply_; }

  // Brings the inactive bank to the active bank's content, so that the next apply writes only
  // what changes (a one-rule change, not a whole policy). Not needed for correctness: call it
  // after apply, off the path that makes a policy enforce.
  Status catchUpInactiveBank();

  // The policy version a previous agent left enforcing, 0 if none.
  uint64_t adoptedPolicyVersion() const { return adopted_version_; }
  const std::map<uint32_t, RuleName>& adoptedRuleNames() const { return rule_names_; }

  // The fd of a loaded program by its name (e.g. "mseg_egress"), for BPF_PROG_TEST_RUN in tests.
  Result<int> programFd(const std::string& name) const;

  // The flow event ring buffer, for ring_buffer__new.
  int eventsFd() const;

  // Hands every datagram flow last seen before `idle_before_ns` (CLOCK_BOOTTIME) to `ended`
  // and removes it, so its next packet is judged again as a new flow.
  Status endIdleFlows(uint64_t idle_before_ns, const std::function<void(const mseg_flow&)>& ended);

  // Hands every aggregated denial to `visit`.
  Status visitDenials(
      const std::function<void(const mseg_denial_key&, const mseg_denial&)>& visit) const;

  // Counter totals over all CPUs since the maps were created.
  Result<std::map<uint32_t, uint64_t>> ruleHits() const;
  Result<std::array<uint64_t, MSEG_REASON_MAX>> reasonCounts() const;

private:
  Datapath() = default;
  // Each bank has four maps: workloads, inventory prefixes, verdict trie and port verdicts,
  // in that order.
  static constexpr size_t kBankMaps = 4;

  ::bpf_map* outerMap(size_t kind) const;
  Status checkCapacity(const BankContent& desired) const;
  Status checkCapacity(const BankDelta& delta) const;
  Status checkCapacity(const std::array<size_t, kBankMaps>& sizes) const;
  Status syncBank(uint32_t bank, const std::shared_ptr<BankContent>& desired,
                  ApplyStats& stats);
  Status writeDelta(uint32_t bank, const BankDelta& delta, ApplyStats& stats);
  Status switchToBank(uint32_t bank, uint64_t policy_version);
  Status settleInactiveBank();
  Status writeRuleNames(const std::map<uint32_t, RuleName>& rule_names);
  void removeStaleRuleNames();
  Status waitForReadersOfInactiveBank();
  Status rereadBank(uint32_t bank);
  Status lockPinDir();
  Status verifyPinnedLinks() const;
  Status checkPolicyMapVersions() const;
  void unpinStaleMaps() const;
  Status prepareBanks();
  Status readAdoptedState();
  Status attachProgram(::bpf_program* program, uint64_t cgroup_id, int cgroup_fd);

  DatapathOptions options_;
  struct mseg_skel* skeleton_ = nullptr;
  std::vector<struct bpf_link*> links_;
  std::array<std::array<int, kBankMaps>, MSEG_BANKS> bank_fds_{};
  std::array<BankMapSpec, kBankMaps> bank_specs_{};
  // What each bank holds. Both point to one object when the banks are alike, except that the
  // inactive bank lacks `inactive_bank_lacks_` after applyDelta until it is caught up.
  std::array<std::shared_ptr<BankContent>, MSEG_BANKS> bank_content_;
  std::optional<BankDelta> inactive_bank_lacks_;
  uint32_t active_bank_ = 0;
  ApplyStats last_apply_;
  // Set by a switch: programs may still read the now inactive bank until a grace period ends.
  bool inactive_bank_may_be_read_ = false;
  std::vector<uint32_t> stale_rule_ids_;  // named in the counters map until readers are gone
  uint64_t adopted_version_ = 0;
  std::map<uint32_t, RuleName> rule_names_;
  int pin_lock_fd_ = -1;
};

// Detaches and removes everything an agent pinned in `pin_dir`. Enforcement stops.
Status uninstallDatapath(const std::string& pin_dir);

// Reads counters and rule names from a pin directory without loading anything (for tools).
struct PinnedCounters {
  uint64_t policy_version = 0;
  std::map<uint32_t, RuleName> rule_names;
  std::map<uint32_t, uint64_t> rule_hits;
  std::array<uint64_t, MSEG_REASON_MAX> reasons{};
};
Result<PinnedCounters> readPinnedCounters(const std::string& pin_dir);

}  // namespace mseg::agent
