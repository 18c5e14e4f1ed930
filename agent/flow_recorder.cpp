#include "flow_recorder.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <time.h>

#include <cstring>

#include "mseg/format/community_id.hpp"
#include "mseg/utf8.hpp"

namespace mseg::agent {
namespace {

namespace tv1 = microseg::telemetry::v1;

bool isIpv4Mapped(const uint8_t (&address)[16]) {
  static constexpr uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return std::memcmp(address, kPrefix, sizeof(kPrefix)) == 0;
}

// IPv4 addresses travel as 4 bytes, IPv6 as 16; all-zero means "not known".
std::string addressBytes(const uint8_t (&address)[16], bool ipv4) {
  const char* bytes = reinterpret_cast<const char*>(address);
  return ipv4 ? std::string(bytes + 12, 4) : std::string(bytes, 16);
}

uint16_t hostPort(uint16_t network_order) { return static_cast<uint16_t>(ntohs(network_order)); }

// An end record's counters and duration; times are CLOCK_BOOTTIME nanoseconds.
void setEndCounters(FlowRecord& record, uint64_t bytes_out, uint64_t bytes_in,
                    uint64_t packets_out, uint64_t packets_in, uint64_t start_ns,
                    uint64_t end_ns) {
  record.set_event(microseg::telemetry::v1::FLOW_EVENT_END);
  record.set_bytes_out(bytes_out);
  record.set_bytes_in(bytes_in);
  record.set_packets_out(packets_out);
  record.set_packets_in(packets_in);
  record.set_duration_nano(end_ns > start_ns ? end_ns - start_ns : 0);
}

tv1::Verdict verdictOf(uint8_t verdict) {
  switch (verdict) {
    case MSEG_VERDICT_ALLOW: return tv1::VERDICT_ALLOW;
    case MSEG_VERDICT_AUDIT: return tv1::VERDICT_AUDIT;
    case MSEG_VERDICT_DENY: return tv1::VERDICT_DENY;
    default: return tv1::VERDICT_UNSPECIFIED;
  }
}

}  // namespace

int64_t bootToUnixOffsetNanos() {
  timespec real{};
  timespec boot{};
  clock_gettime(CLOCK_REALTIME, &real);
  clock_gettime(CLOCK_BOOTTIME, &boot);
  return (static_cast<int64_t>(real.tv_sec) - boot.tv_sec) * 1000000000LL +
         (static_cast<int64_t>(real.tv_nsec) - boot.tv_nsec);
}

FlowRecorder::FlowRecorder(std::string host, Sink sink)
    : host_(std::move(host)), sink_(std::move(sink)) {}

void FlowRecorder::setPolicy(const policy::CompiledPolicy& policy,
                             const std::map<uint32_t, RuleName>& rules, uint64_t version) {
  workloads_.clear();
  for (const auto& workload : policy.workloads) {
    workloads_[workload.id] = workload;
  }
  peers_.clear();
  for (const auto& peer : policy.peers) {
    peers_[peer.id] = peer;
  }
  rules_ = rules;
  policy_version_ = version;
  policy_hash_ = policy.content_hash;
}

void FlowRecorder::setCgroups(const std::vector<CgroupEntry>& cgroups,
                              const std::string& attach_prefix) {
  cgroup_paths_.clear();
  for (const auto& cgroup : cgroups) {
    cgroup_paths_[cgroup.id] = cgroup.relative_path.empty()
                                   ? attach_prefix
                                   : attach_prefix + "/" + cgroup.relative_path;
  }
}

uint64_t FlowRecorder::toUnixNanos(uint64_t boot_ns) const {
  return static_cast<uint64_t>(static_cast<int64_t>(boot_ns) + bootToUnixOffsetNanos());
}

FlowRecord FlowRecorder::recordOf(const mseg_flow_identity& flow, uint64_t time_ns) const {
  FlowRecord record;
  record.set_host(host_);
  record.set_agent_id(host_);
  record.set_time_unix_nano(toUnixNanos(time_ns));
  record.set_start_unix_nano(toUnixNanos(flow.start_ns));
  record.set_direction(flow.direction == MSEG_DIR_EGRESS ? tv1::DIRECTION_EGRESS
                                                         : tv1::DIRECTION_INGRESS);
  const bool ipv4 = isIpv4Mapped(flow.peer_addr);
  record.set_ip_version(ipv4 ? 4 : 6);
  record.set_protocol(flow.protocol);
  record.set_peer_address(addressBytes(flow.peer_addr, ipv4));
  record.set_peer_port(hostPort(flow.peer_port));
  static constexpr uint8_t kUnknown[16] = {};
  if (std::memcmp(flow.local_addr, kUnknown, sizeof(kUnknown)) != 0) {
    record.set_local_address(addressBytes(flow.local_addr, ipv4));
  }
  record.set_local_port(hostPort(flow.local_port));
  if (flow.protocol == IPPROTO_ICMP || flow.protocol == IPPROTO_ICMPV6) {
    // The datapath carries the ICMP type in the peer port. Flow tools put the type in the
    // originator's port and the code in the responder's: the code is not tracked, so 0.
    const uint16_t type = hostPort(flow.peer_port);
    const bool egress = flow.direction == MSEG_DIR_EGRESS;
    record.set_local_port(egress ? type : 0);
    record.set_peer_port(egress ? 0 : type);
  }

  auto* workload = record.mutable_workload();
  if (auto known = workloads_.find(flow.workload_id); known != workloads_.end()) {
    workload->set_name(known->second.name);
    workload->mutable_labels()->insert(known->second.labels.begin(), known->second.labels.end());
  }
  workload->set_cgroup_id(flow.cgroup_id);
  if (auto path = cgroup_paths_.find(flow.cgroup_id); path != cgroup_paths_.end()) {
    workload->set_cgroup(path->second);
  }
  workload->set_pid(flow.pid);
  workload->set_uid(flow.uid);
  // A task names itself (prctl): a name that is not UTF-8 would make the record unreadable
  // for the collector and microsegctl, which parse proto3 strings strictly.
  workload->set_command(validUtf8({flow.comm, strnlen(flow.comm, sizeof(flow.comm))}));

  auto* peer = record.mutable_peer();
  if (auto known = peers_.find(flow.peer_id); known != peers_.end()) {
    peer->set_name(known->second.name);
    peer->mutable_labels()->insert(known->second.labels.begin(), known->second.labels.end());
  } else {
    peer->set_name(flow.peer_id == MSEG_PEER_WORLD ? "world" : "");
  }

  record.set_verdict(verdictOf(flow.verdict));
  if (auto rule = rules_.find(flow.rule_id); rule != rules_.end()) {
    record.set_rule(rule->second.name);
  }
  record.set_policy_version(policy_version_);
  record.set_policy_hash(policy_hash_);
  return record;
}

void FlowRecorder::emit(FlowRecord&& record) {
  if (auto id = format::communityId(record)) {
    record.set_community_id(*id);
  }
  sink_(std::move(record));
}

void FlowRecorder::onEvent(const mseg_event& event) {
  FlowRecord record = recordOf(event.flow, event.time_ns);
  switch (event.kind) {
    case MSEG_EVENT_START:
      record.set_event(tv1::FLOW_EVENT_START);
      break;
    case MSEG_EVENT_END:
      setEndCounters(record, event.bytes_out, event.bytes_in, event.packets_out,
                     event.packets_in, event.flow.start_ns, event.time_ns);
      break;
    case MSEG_EVENT_DENIED:
      record.set_event(tv1::FLOW_EVENT_DENIED);
      record.set_attempts(1);
      break;
    default:
      return;
  }
  emit(std::move(record));
}

void FlowRecorder::onIdleFlow(const mseg_flow& flow) {
  FlowRecord record = recordOf(flow.identity, flow.last_seen_ns);
  setEndCounters(record, flow.bytes_out, flow.bytes_in, flow.packets_out, flow.packets_in,
                 flow.identity.start_ns, flow.last_seen_ns);
  emit(std::move(record));
}

void FlowRecorder::onDenials(const mseg_denial& denial, uint64_t attempts) {
  FlowRecord record = recordOf(denial.flow, denial.last_ns);
  record.set_event(tv1::FLOW_EVENT_DENIED);
  record.set_start_unix_nano(toUnixNanos(denial.first_ns));
  record.set_attempts(attempts);
  emit(std::move(record));
}

}  // namespace mseg::agent
