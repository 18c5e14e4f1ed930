// microsegd's control loop: keeps the kernel enforcing the policy file for the cgroups that
// exist, reacting to policy reloads (SIGHUP) and to cgroups appearing or going away.
#pragma once

#include <array>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include <unordered_map>

#include "cgroup_changes.hpp"
#include "cgroups.hpp"
#include "config.hpp"
#include "datapath.hpp"
#include "collector_client.hpp"
#include "control_server.hpp"
#include "file_watcher.hpp"
#include "flow_log.hpp"
#include "spool.hpp"
#include "start_footprint.hpp"
#include "flow_recorder.hpp"
#include "metrics.hpp"
#include "service_notify.hpp"
#include "kernel_state.hpp"
#include "logging.hpp"
#include "mseg/policy/compiled.hpp"
#include "mseg/policy/compiler.hpp"
#include "mseg/policy/incremental.hpp"
#include "mseg/policy/source.hpp"
#include "mseg/result.hpp"

struct ring_buffer;

namespace mseg::agent {

class Agent {
public:
  // Compiles the policy, loads or adopts the datapath, applies the policy and attaches. A
  // policy with errors fails here before anything in the kernel is touched, so a policy a
  // previous agent pinned keeps enforcing.
  static Result<std::unique_ptr<Agent>> start(const AgentConfig& config);

  // Serves signals, cgroup changes and periodic counter summaries until SIGTERM or SIGINT.
  // Returns the process exit code. The pinned programs keep enforcing after it returns.
  int run();

private:
  explicit Agent(AgentConfig config)
      : config_(std::move(config)), policy_source_(config_.policy_path) {}

  Status startUp();
  Status checkCollectorFiles() const;
  Status startMetrics();
  Status openExporters();
  // The OCSF flow log's path; empty when records go only to the collector, or nowhere.
  std::string flowLogPath() const;
  std::vector<std::string> pathsStartMayCreate() const;
  void undoFailedStart(const StartFootprint& before);
  Status startTelemetry();
  void exportRecord(FlowRecord& record);
  void reportFlowLogHealth(const Status& status);
  uint64_t recordsExported() const;
  uint64_t recordsDropped() const;
  void drainEvents();
  void tick();
  void reportDenials();
  void publishMetrics();
  // A new version bumps the policy version; Settle applies the full compile of a version the
  // fast path (applyChange) already enforces.
  enum class ApplyKind : uint8_t { NewVersion, Settle };
  enum class ReloadTrigger : uint8_t { Signal, FileChanged };
  Result<std::shared_ptr<const policy::Policy>> loadPolicy(policy::LoadTimes& times);
  Result<policy::IndexedPolicy> compilePolicy(std::shared_ptr<const policy::Policy> policy,
                                              policy::LoadTimes& times) const;
  Status applyPolicy(policy::IndexedPolicy compiled, const policy::LoadTimes& times,
                     ApplyKind kind);
  Result<bool> applyChange(const std::shared_ptr<const policy::Policy>& next,
                           const policy::LoadTimes& times);
  Status compileAndApply(const std::shared_ptr<const policy::Policy>& policy,
                         policy::LoadTimes& times, ApplyKind kind);
  Status loadAndApplyPolicy(ReloadTrigger trigger, ReloadOutcome::Result& outcome);
  void reportSettled(size_t kernel_changed, double took_ms);
  double recordApplyStages(const std::array<double, 5>& stages_ms);
  void catchUpInactiveBank();
  Status rebindCgroups();
  void updateRecorder(const std::vector<CgroupEntry>& cgroups, bool drain_first = true);
  void reloadPolicy(ReloadTrigger trigger);
  void logCounterChanges();
  void reportCgroupChanges(const std::optional<CgroupChangeSummary::Burst>& burst);
  // STATE_DIR/status.json; `state` is "enforcing" while the agent runs, "stopped" at its end.
  void writeStatus(const char* state = "enforcing") const;
  std::string serviceStatus() const;
  Status startControl();
  void publishControlState(std::vector<CgroupEntry> cgroups);
  ExporterStats exporterStats() const;

  AgentConfig config_;
  // Remembers the parsed policy files, so a reload parses only those that changed.
  policy::PolicySource policy_source_;
  std::string attach_cgroup_;
  std::string cgroup_v2_prefix_;  // attach cgroup relative to the cgroup v2 mount
  std::unique_ptr<Datapath> datapath_;
  CgroupWatcher watcher_;
  FileWatcher policy_watcher_;
  RuleIds rule_ids_;
  // Shared with control calls, which read it on their own threads.
  std::shared_ptr<const policy::CompiledPolicy> policy_ =
      std::make_shared<const policy::CompiledPolicy>();
  // The policy as parsed and what the change compiler needs of its compiled form, for the
  // next change.
  std::shared_ptr<const policy::Policy> parsed_policy_;
  std::shared_ptr<const policy::CompileIndex> compile_index_;
  std::vector<WorkloadBinding> bindings_;
  std::vector<uint32_t> kernel_rule_ids_;
  uint64_t policy_version_ = 0;
  std::string last_error_;
  std::map<uint32_t, uint64_t> last_hits_;

  std::optional<FlowRecorder> recorder_;
  std::optional<FlowLog> flow_log_;
  std::unique_ptr<Spool> spool_;
  std::unique_ptr<CollectorClient> collector_;
  std::string host_;
  // Without a collector record ids are "<host>-<incarnation>-<sequence>": the sequence starts at
  // 1 on every start, and the incarnation, random per start, keeps ids unique across restarts.
  std::string local_record_prefix_;
  uint64_t local_sequence_ = 1;
  std::unique_ptr<MetricsServer> metrics_;
  ServiceNotifier notifier_;
  uint64_t reloads_applied_ = 0;
  uint64_t reloads_failed_ = 0;
  uint64_t incremental_applies_ = 0;     // versions applied by applyChange
  uint64_t incremental_mismatches_ = 0;  // see reportSettled
  double last_apply_seconds_ = 0;
  // Seconds per stage of the last policy apply: read, parse, compile, prepare, kernel.
  std::array<double, 5> last_apply_stages_{};
  ::ring_buffer* events_ = nullptr;
  // Denied attempts already reported, per aggregation key (bytes of mseg_denial_key).
  std::unordered_map<std::string, uint64_t> denials_reported_;
  uint64_t unreported_before_ns_ = 0;  // CLOCK_BOOTTIME when telemetry was turned back on
  uint64_t records_exported_ = 0;  // without a flow log: handed to the spool
  // A disk full for hours writes a line a minute: few, and the log shows it goes on.
  RepeatedProblem flow_log_problem_{std::chrono::minutes(1)};
  mutable RepeatedProblem status_file_problem_{std::chrono::minutes(1)};
  RepeatedProblem spool_problem_{std::chrono::minutes(1)};
  unsigned ticks_ = 0;
  CgroupChangeSummary cgroup_changes_;
  std::shared_ptr<ControlState> control_state_;
  std::unique_ptr<ControlServer> control_;

public:
  ~Agent();
};

// Blocks SIGHUP, SIGTERM and SIGINT, which the agent's loop reads from a signalfd; until it
// runs they wait. Must run before any thread starts (threads inherit the mask, and one that
// does not block them would take the default action, ending the process without a clean stop)
// and as early as possible: a SIGHUP while the agent starts must not end it.
void blockAgentSignals();

// The absolute cgroup directory to attach to: `requested` is empty (the cgroup v2 root),
// absolute (must lie inside the cgroup v2 mount) or relative to the cgroup v2 mount.
Result<std::string> resolveAttachCgroup(const std::string& requested);

}  // namespace mseg::agent
