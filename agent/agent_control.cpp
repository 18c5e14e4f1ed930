// The agent's side of the control API: what it publishes for microsegctl, kept apart from the
// event loop in agent.cpp.
#include <unistd.h>

#include <chrono>

#include "agent.hpp"

#ifndef MSEG_VERSION
#define MSEG_VERSION "unknown"
#endif

namespace mseg::agent {

Status Agent::startControl() {
  AgentIdentity identity;
  identity.version = MSEG_VERSION;
  identity.pid = getpid();
  identity.started_unix_nano = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(
          std::chrono::system_clock::now().time_since_epoch())
          .count());
  identity.attach_cgroup = attach_cgroup_;
  identity.pin_dir = config_.pin_dir;
  identity.policy_file = config_.policy_path;
  identity.telemetry = config_.telemetry;
  control_state_ = std::make_shared<ControlState>(std::move(identity));

  auto server = ControlServer::start({config_.control_socket, config_.control_group},
                                     control_state_);
  if (!server) {
    return server.error();
  }
  control_ = std::move(*server);
  return {};
}

void Agent::publishControlState(std::vector<CgroupEntry> cgroups) {
  control_state_->publishPolicy(policy_, policy_version_, bindings_, std::move(cgroups));
  control_state_->publishExporter(exporterStats());
}

ExporterStats Agent::exporterStats() const {
  ExporterStats stats;
  if (flow_log_) {
    stats.flow_log =
        config_.flow_log.empty() ? config_.state_dir + "/flows.ocsf.jsonl" : config_.flow_log;
  }
  stats.collector = config_.collector;
  if (collector_) {
    stats.collector_connected = collector_->connected();
  }
  if (spool_) {
    stats.spool_records = spool_->pendingRecords();
    stats.spool_dropped = spool_->droppedTotal();
  }
  stats.records_exported = recordsExported();
  stats.records_dropped = recordsDropped();
  return stats;
}

}  // namespace mseg::agent
