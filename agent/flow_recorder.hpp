// Turns the datapath's numeric flow events into flow records with names, labels, host and
// policy version, numbered in order for delivery. Single-threaded: owned by the agent loop.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "datapath.hpp"
#include "kernel_state.hpp"
#include "microseg/telemetry/v1/telemetry.pb.h"
#include "mseg/abi.h"
#include "mseg/policy/compiled.hpp"

namespace mseg::agent {

using FlowRecord = microseg::telemetry::v1::FlowRecord;

class FlowRecorder {
public:
  using Sink = std::function<void(FlowRecord&&)>;

  // Records go to `sink` without sequence numbers: whoever stores them numbers them.
  FlowRecorder(std::string host, Sink sink);

  // What the numbers in events mean from now on. Call after every policy or cgroup change.
  void setPolicy(const policy::CompiledPolicy& policy, const std::map<uint32_t, RuleName>& rules,
                 uint64_t version);
  void setCgroups(const std::vector<CgroupEntry>& cgroups, const std::string& attach_prefix);

  // A ring buffer event: a flow start, a TCP connection's end, or a first denied attempt.
  void onEvent(const mseg_event& event);
  // A datagram flow the agent ended because it stayed idle.
  void onIdleFlow(const mseg_flow& flow);
  // Denied attempts of one kind not reported yet (`attempts` of them, the last at `last_ns`).
  void onDenials(const mseg_denial& denial, uint64_t attempts);

private:
  FlowRecord recordOf(const mseg_flow_identity& flow, uint64_t time_ns) const;
  void emit(FlowRecord&& record);
  uint64_t toUnixNanos(uint64_t boot_ns) const;

  std::string host_;
  Sink sink_;
  uint64_t policy_version_ = 0;
  std::string policy_hash_;
  std::unordered_map<uint32_t, policy::CompiledWorkload> workloads_;
  std::unordered_map<uint32_t, policy::CompiledPeer> peers_;
  std::map<uint32_t, RuleName> rules_;
  std::unordered_map<uint64_t, std::string> cgroup_paths_;
};

// CLOCK_REALTIME minus CLOCK_BOOTTIME, in nanoseconds: adds to a datapath timestamp to give
// Unix time. Read anew on each call, so clock adjustments are followed.
int64_t bootToUnixOffsetNanos();

}  // namespace mseg::agent
