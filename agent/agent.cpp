#include "agent.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <unordered_set>

#include <bpf/libbpf.h>

#include "logging.hpp"
#include "mounts.hpp"
#include "mseg/certificate_check.hpp"
#include "mseg/policy/compiler.hpp"
#include "mseg/unique_fd.hpp"
#include "reasons.hpp"
#include "status_file.hpp"

namespace mseg::agent {
namespace {

namespace fs = std::filesystem;

uint8_t kernelVerdict(policy::Verdict verdict) { return static_cast<uint8_t>(verdict); }

void logDiagnostics(const policy::Diagnostics& diagnostics) {
  auto log = logger("policy");
  for (const auto& diagnostic : diagnostics.all()) {
    if (diagnostic.severity == policy::Severity::Error) {
      log->error("{}", diagnostic.toString());
    } else {
      log->warn("{}", diagnostic.toString());
    }
  }
}

std::map<uint32_t, RuleName> ruleNames(const policy::CompiledPolicy& compiled,
                                       const std::vector<uint32_t>& kernel_ids) {
  std::map<uint32_t, RuleName> names;
  names[MSEG_RULE_DEFAULT_DENY] = {"(default deny)", MSEG_VERDICT_DENY};
  names[MSEG_RULE_DEFAULT_AUDIT] = {"(default deny, audit)", MSEG_VERDICT_AUDIT};
  for (const auto& rule : compiled.rules) {
    uint32_t id = kernel_ids[rule.index];
    if (id != MSEG_RULE_NONE) {
      names[id] = {rule.name, kernelVerdict(rule.verdict)};
    }
  }
  return names;
}

sigset_t agentSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGHUP);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  return signals;
}


// A descriptor that delivers SIGHUP, SIGTERM and SIGINT as readable events.
int signalDescriptor() {
  blockAgentSignals();
  sigset_t signals = agentSignals();
  return signalfd(-1, &signals, SFD_NONBLOCK | SFD_CLOEXEC);
}

// A one-second tick drives housekeeping: idle flows, denial reports, log flushes, summaries.
int tickDescriptor() {
  int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (fd >= 0) {
    itimerspec spec{};
    spec.it_interval.tv_sec = 1;
    spec.it_value.tv_sec = 1;
    timerfd_settime(fd, 0, &spec, nullptr);
  }
  return fd;
}

std::string hostName(const std::string& configured) {
  if (!configured.empty()) {
    return configured;
  }
  char name[256] = {};
  gethostname(name, sizeof(name) - 1);
  return name;
}

// 64 random bits in hex, new on every start. Random rather than a counter in the state dir, so
// ids stay unique when the state dir is lost or a host is cloned with it.
Result<std::string> randomIncarnation() {
  uint64_t bits = 0;
  if (getrandom(&bits, sizeof(bits), 0) != static_cast<ssize_t>(sizeof(bits))) {
    return Error::fromErrno(errno, "draw a random incarnation id for flow record ids");
  }
  return fmt::format("{:016x}", bits);
}

uint64_t bootTimeNs() {
  timespec boot{};
  clock_gettime(CLOCK_BOOTTIME, &boot);
  return static_cast<uint64_t>(boot.tv_sec) * 1000000000ull + boot.tv_nsec;
}

int handleEvent(void* context, void* data, size_t size) {
  if (size < sizeof(mseg_event)) {
    return 0;
  }
  mseg_event event{};
  std::memcpy(&event, data, sizeof(event));
  static_cast<FlowRecorder*>(context)->onEvent(event);
  return 0;
}

// How many cgroups `after` binds that `before` did not, and the other way round.
std::pair<size_t, size_t> bindingChanges(const std::vector<WorkloadBinding>& before,
                                         const std::vector<WorkloadBinding>& after) {
  std::unordered_set<uint64_t> old_ids;
  for (const auto& binding : before) {
    old_ids.insert(binding.cgroup_id);
  }
  size_t bound = 0;
  for (const auto& binding : after) {
    bound += old_ids.erase(binding.cgroup_id) == 0 ? 1 : 0;
  }
  return {bound, old_ids.size()};
}


}  // namespace

void blockAgentSignals() {
  sigset_t signals = agentSignals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
}

Result<std::string> resolveAttachCgroup(const std::string& requested) {
  auto mount = findCgroup2Mount();
  if (!mount) {
    return mount.error();
  }
  fs::path path = requested.empty()           ? fs::path(*mount)
                  : requested.front() == '/' ? fs::path(requested)
                                              : fs::path(*mount) / requested;
  std::error_code err;
  fs::path canonical = fs::canonical(path, err);
  if (err) {
    return Error(err.value(), "cgroup " + path.string() + ": " + err.message());
  }
  auto relative = canonical.lexically_relative(*mount);
  if (relative.empty() || relative.native().rfind("..", 0) == 0) {
    return Error(EINVAL, "cgroup " + canonical.string() + " is not inside the cgroup v2 mount " +
                             *mount);
  }
  return canonical.string();
}

void Agent::updateRecorder(const std::vector<CgroupEntry>& cgroups, bool drain_first) {
  if (!recorder_) {
    return;
  }
  // Events of the old version still in the ring buffer are named with the old policy.
  if (drain_first) {
    drainEvents();
  }
  recorder_->setPolicy(*policy_, ruleNames(*policy_, kernel_rule_ids_), policy_version_);
  recorder_->setCgroups(cgroups, cgroup_v2_prefix_);
}

namespace {

// The first errors travel in the message, so status.json and `microsegctl status` say what is
// wrong without the log.
Error policyError(const std::string& path, const Error& error,
                  const policy::Diagnostics& diagnostics) {
  std::string message = error.message();
  if (message.rfind(path + ": ", 0) == 0) {
    message.erase(0, path.size() + 2);  // the policy library names the file already
  }
  size_t shown = 0;
  for (const auto& diagnostic : diagnostics.all()) {
    if (diagnostic.severity == policy::Severity::Error && shown++ < 3) {
      message += "; " + diagnostic.toString();
    }
  }
  return Error(error.code(), "policy " + path + ": " + message);
}

}  // namespace

Result<std::shared_ptr<const policy::Policy>> Agent::loadPolicy(policy::LoadTimes& times) {
  policy::Diagnostics diagnostics;
  auto loaded = policy_source_.load(diagnostics, &times);
  logDiagnostics(diagnostics);
  const policy::LoadStats& stats = policy_source_.lastLoad();
  logger("policy")->debug("policy files loaded files={} read={} parsed={}", stats.files,
                          stats.read, stats.parsed);
  if (!loaded) {
    return policyError(config_.policy_path, loaded.error(), diagnostics);
  }
  return std::make_shared<const policy::Policy>(std::move(*loaded));
}

Result<policy::IndexedPolicy> Agent::compilePolicy(std::shared_ptr<const policy::Policy> policy,
                                                   policy::LoadTimes& times) const {
  auto started = std::chrono::steady_clock::now();
  policy::Diagnostics diagnostics;
  auto compiled = policy::compileIndexed(std::move(policy), diagnostics);
  times.compile = std::chrono::steady_clock::now() - started;
  logDiagnostics(diagnostics);
  if (!compiled) {
    return policyError(config_.policy_path, compiled.error(), diagnostics);
  }
  return compiled;
}

Result<std::unique_ptr<Agent>> Agent::start(const AgentConfig& config) {
  blockAgentSignals();
  std::unique_ptr<Agent> agent(new Agent(config));
  const StartFootprint before =
      StartFootprint::take(config.pin_dir, agent->pathsStartMayCreate());
  if (auto started = agent->startUp(); !started) {
    agent->undoFailedStart(before);
    return started.error();
  }
  return agent;
}

// Everything that can be wrong with the settings is found before the kernel is touched: the
// policy, the control socket, the metrics address, the collector's TLS files, the flow log.
Status Agent::startUp() {
  auto log = logger("agent");
  auto cgroup = resolveAttachCgroup(config_.cgroup_path);
  if (!cgroup) {
    return cgroup.error();
  }
  attach_cgroup_ = *cgroup;
  if (auto mount = findCgroup2Mount()) {
    cgroup_v2_prefix_ = fs::path(*cgroup).lexically_relative(*mount).string();
    if (cgroup_v2_prefix_ == ".") {
      cgroup_v2_prefix_.clear();
    }
  }

  policy::LoadTimes load_times;
  auto loaded = loadPolicy(load_times);
  if (!loaded) {
    return loaded.error();
  }
  auto compiled = compilePolicy(*loaded, load_times);
  if (!compiled) {
    return compiled.error();
  }
  if (auto usable = checkCollectorFiles(); !usable) {
    return usable;
  }
  // A control socket another agent holds fails the start here.
  if (auto control = startControl(); !control) {
    return control;
  }
  if (auto metrics = startMetrics(); !metrics) {
    return metrics;
  }
  if (auto exporters = openExporters(); !exporters) {
    return exporters;
  }

  auto datapath = Datapath::open({attach_cgroup_, config_.pin_dir});
  if (!datapath) {
    return datapath.error();
  }
  datapath_ = std::move(*datapath);
  policy_version_ = datapath_->adoptedPolicyVersion();
  if (policy_version_ > 0) {
    log->info("adopting pinned datapath pin_dir={} policy_version={}", config_.pin_dir,
              policy_version_);
  }
  std::map<uint32_t, std::string> adopted_names;
  for (const auto& [id, rule] : datapath_->adoptedRuleNames()) {
    if (id >= MSEG_FIRST_RULE_ID) {
      adopted_names[id] = rule.name;
    }
  }
  rule_ids_.adopt(adopted_names);

  if (auto watching = watcher_.start(attach_cgroup_); !watching) {
    return watching.error();
  }
  if (auto watching = policy_watcher_.start(config_.policy_path); !watching) {
    return watching.error();
  }
  if (auto telemetry = startTelemetry(); !telemetry) {
    return telemetry.error();
  }
  if (metrics_) {
    publishMetrics();
  }
  if (auto applied = applyPolicy(std::move(*compiled), load_times, ApplyKind::NewVersion);
      !applied) {
    return applied.error();
  }
  parsed_policy_ = std::move(*loaded);
  if (auto attached = datapath_->attach(); !attached) {
    return attached.error();
  }
  if (!config_.telemetry) {
    if (auto detached = datapath_->detachSockOps(); !detached) {
      return detached.error();
    }
  }
  if (auto hits = datapath_->ruleHits()) {
    last_hits_ = std::move(*hits);
  }
  log->info("enforcing cgroup={} pin_dir={} policy={} policy_version={}", attach_cgroup_,
            config_.pin_dir, config_.policy_path, policy_version_);
  writeStatus();
  return {};
}

// The agent's own TLS files, checked before anything else so that a missing file, a key of
// another certificate or a certificate and key given the wrong way round fail the start with
// the files named, rather than every connection later with a message of gRPC's.
Status Agent::checkCollectorFiles() const {
  if (config_.collector.empty()) {
    return {};
  }
  auto problems = checkTlsFiles({"--tls-cert", config_.tls_cert}, {"--tls-key", config_.tls_key},
                                {"--collector-ca", config_.collector_ca}, std::nullopt);
  if (problems.empty()) {
    return {};
  }
  std::string message;
  for (const auto& problem : problems) {
    message += (message.empty() ? "" : "; ") + problem;
  }
  return Error(EINVAL, message);
}

Status Agent::startMetrics() {
  if (config_.metrics_listen.empty()) {
    return {};
  }
  // It answers 503 until the first metrics are published, once the datapath is open.
  auto metrics = MetricsServer::start(config_.metrics_listen);
  if (!metrics) {
    return metrics.error().wrap("metrics endpoint --metrics-listen");
  }
  metrics_ = std::move(*metrics);
  logger("agent")->info("serving metrics listen={} port={}", config_.metrics_listen,
                        metrics_->port());
  return {};
}

std::string Agent::flowLogPath() const {
  if (!config_.telemetry || (!config_.collector.empty() && config_.flow_log.empty())) {
    return "";
  }
  return config_.flow_log.empty() ? config_.state_dir + "/flows.ocsf.jsonl" : config_.flow_log;
}

std::vector<std::string> Agent::pathsStartMayCreate() const {
  std::vector<std::string> paths;
  if (const std::string flow_log = flowLogPath(); !flow_log.empty()) {
    paths.push_back(flow_log);
  }
  if (config_.telemetry && !config_.collector.empty()) {
    paths.push_back(config_.state_dir + "/spool");
  }
  paths.push_back(config_.state_dir);
  return paths;
}

// What a failed start leaves is what was there before: its files and pins go, a previous
// agent's pins stay and keep enforcing. The pins only under the pin directory's lock, which the
// datapath holds once it is open; else this takes it, and leaves the pins to whoever has it.
void Agent::undoFailedStart(const StartFootprint& before) {
  control_.reset();
  if (collector_) {
    collector_->stop();
    collector_.reset();
  }
  ring_buffer__free(events_);
  events_ = nullptr;
  recorder_.reset();
  flow_log_.reset();
  spool_.reset();
  metrics_.reset();
  std::vector<std::string> removed = before.removeCreatedPaths();

  UniqueFd lock;
  if (!datapath_) {
    lock.reset(::open(config_.pin_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  }
  if (datapath_ || (lock && flock(lock.get(), LOCK_EX | LOCK_NB) == 0)) {
    for (const auto& pin : before.removeCreatedPins()) {
      removed.push_back(config_.pin_dir + "/" + pin);
    }
  }
  // Closing the descriptors of links whose pins are gone detaches their programs.
  datapath_.reset();
  if (!removed.empty()) {
    logger("agent")->info("removed what the failed start created: {}", fmt::join(removed, ", "));
  }
}

Agent::~Agent() {
  control_.reset();
  if (collector_) {
    collector_->stop();
  }
  ring_buffer__free(events_);
}

// Opens where flow records go, before the kernel is touched: a flow log that cannot be opened,
// or a spool that cannot be created, fails the start while nothing else has changed.
Status Agent::openExporters() {
  if (!config_.telemetry) {
    return {};
  }
  host_ = hostName(config_.host);
  auto incarnation = randomIncarnation();
  if (!incarnation) {
    return incarnation.error();
  }
  local_record_prefix_ = host_ + "-" + *incarnation + "-";
  if (!config_.collector.empty()) {
    auto spool = Spool::open(config_.state_dir + "/spool", config_.spool_max_bytes);
    if (!spool) {
      return spool.error();
    }
    spool_ = std::move(*spool);
    (void)checkOwnCertificate(*logger("agent"), "--tls-cert", config_.tls_cert,
                              std::chrono::system_clock::now());
    auto client = CollectorClient::create({config_.collector, config_.collector_ca,
                                           config_.tls_cert, config_.tls_key,
                                           config_.collector_server_name, host_},
                                          *spool_);
    if (!client) {
      return client.error();
    }
    collector_ = std::move(*client);
  }
  if (const std::string path = flowLogPath(); !path.empty()) {
    auto log = FlowLog::open(path, config_.flow_log_max_bytes, config_.flow_log_keep);
    if (!log) {
      return log.error();
    }
    flow_log_.emplace(std::move(*log));
  }
  return {};
}

// Records go to the collector through the spool when one is configured, and to the local OCSF
// flow log when no collector is configured or a flow log path is given explicitly (both opened
// by openExporters). With telemetry off the datapath reports nothing and none of this is set up.
Status Agent::startTelemetry() {
  auto was_on = datapath_->setFlowTelemetry(config_.telemetry);
  if (!was_on) {
    return was_on.error();
  }
  if (!config_.telemetry) {
    logger("agent")->info("flow telemetry off: enforcing and counting per rule, no flow records");
    return {};
  }
  if (!*was_on) {
    // Datagram flows admitted while telemetry was off had no start record; their end is not
    // reported either.
    // LIMITATION: only this agent knows the switch time; if it restarts while such a flow is
    // still active, the next agent reports that flow's end (without a start).
    unreported_before_ns_ = bootTimeNs();
  }
  if (collector_) {
    collector_->start();
    logger("agent")->info("flow records go to collector={} spooled={} next_sequence={}",
                          config_.collector, spool_->pendingRecords(), spool_->nextSequence());
  }
  if (flow_log_) {
    logger("agent")->info("flow records go to {}", flowLogPath());
  }
  recorder_.emplace(host_, [this](FlowRecord&& record) {
    exportRecord(record);
    control_state_->flows().push(std::move(record));
  });
  events_ = ring_buffer__new(datapath_->eventsFd(), handleEvent, &*recorder_, nullptr);
  if (events_ == nullptr) {
    return Error::fromErrno(errno, "open the flow event ring buffer");
  }
  // Denials a previous agent saw are not reported again.
  (void)datapath_->visitDenials([this](const mseg_denial_key& key, const mseg_denial& denial) {
    denials_reported_[std::string(reinterpret_cast<const char*>(&key), sizeof(key))] =
        denial.attempts;
  });
  return {};
}

void Agent::exportRecord(FlowRecord& record) {
  if (spool_) {
    spool_->append(record, host_);
  } else {
    record.set_sequence(local_sequence_);
    record.set_record_id(local_record_prefix_ + std::to_string(local_sequence_));
    local_sequence_ += 1;
  }
  if (!flow_log_) {
    records_exported_ += 1;
    return;
  }
  reportFlowLogHealth(flow_log_->write(record));
}

// The flow log counts every record it loses; this says so to the operator: the first failure at
// once, then at most once a minute while failures go on (never a line per record), and once
// when records reach the file again.
void Agent::reportFlowLogHealth(const Status& status) {
  if (!status) {
    if (flow_log_problem_.due(std::chrono::steady_clock::now())) {
      logger("agent")->warn("cannot write the flow log, flow records are dropped until it works; "
                            "free space on its file system or set flow_log to another place "
                            "dropped_total={} err={}",
                            flow_log_->recordsDropped(), status.error().message());
    }
    return;
  }
  if (!flow_log_->failing() && flow_log_problem_.ended()) {
    logger("agent")->info("flow log writable again dropped_total={}", flow_log_->recordsDropped());
  }
}

uint64_t Agent::recordsExported() const {
  return flow_log_ ? flow_log_->recordsWritten() : records_exported_;
}

uint64_t Agent::recordsDropped() const { return flow_log_ ? flow_log_->recordsDropped() : 0; }

void Agent::drainEvents() {
  if (events_ == nullptr) {
    return;
  }
  int consumed = ring_buffer__consume(events_);
  if (consumed < 0) {
    logger("agent")->warn("cannot read flow events err={}", std::strerror(-consumed));
  }
}

void Agent::reportDenials() {
  (void)datapath_->visitDenials([this](const mseg_denial_key& key, const mseg_denial& denial) {
    auto& reported = denials_reported_[std::string(reinterpret_cast<const char*>(&key),
                                                   sizeof(key))];
    if (reported == 0) {
      reported = denial.reported;  // the datapath reported the first attempt as an event
    }
    if (denial.attempts > reported) {
      recorder_->onDenials(denial, denial.attempts - reported);
      reported = denial.attempts;
    }
  });
}

void Agent::tick() {
  drainEvents();
  const uint64_t boot_ns = bootTimeNs();
  const uint64_t idle_ns = static_cast<uint64_t>(config_.udp_idle_timeout_s) * 1000000000ull;
  // Idle flows end with telemetry off too: their next packet must be judged again.
  if (boot_ns > idle_ns) {
    (void)datapath_->endIdleFlows(boot_ns - idle_ns, [this](const mseg_flow& flow) {
      if (recorder_ && flow.identity.start_ns >= unreported_before_ns_) {
        recorder_->onIdleFlow(flow);
      }
    });
  }
  if (recorder_) {
    reportDenials();
  }
  notifier_.watchdog();
  if (flow_log_) {
    reportFlowLogHealth(flow_log_->flush());
  }
  if (spool_) {
    // LIMITATION: records that cannot be written wait in memory, without a bound, until the
    // spool's file system has space again.
    auto synced = spool_->sync();
    if (!synced && spool_problem_.due(std::chrono::steady_clock::now())) {
      logger("agent")->warn("cannot write the spool, records wait in memory until it works; "
                            "free space on the file system of state_dir {} err={}",
                            config_.state_dir, synced.error().message());
    } else if (synced && spool_problem_.ended()) {
      logger("agent")->info("spool written again records={}", spool_->pendingRecords());
    }
    collector_->notify();
  }
  ticks_ += 1;
  control_state_->publishExporter(exporterStats());
  if (metrics_) {
    publishMetrics();
  }
  if (config_.stats_interval_s > 0 && ticks_ % config_.stats_interval_s == 0) {
    logCounterChanges();
  }
  reportCgroupChanges(cgroup_changes_.takeEnded(std::chrono::steady_clock::now()));
}

// One line per burst of cgroup changes (see CgroupChangeSummary); each change is at debug.
void Agent::reportCgroupChanges(const std::optional<CgroupChangeSummary::Burst>& burst) {
  if (!burst) {
    return;
  }
  logger("agent")->info("workload cgroups changed changes={} bound={} unbound={} "
                        "workload_cgroups={} policy_version={}",
                        burst->changes, burst->bound, burst->unbound, burst->workload_cgroups,
                        burst->last_version);
}

void Agent::publishMetrics() {
  MetricsText text;
  text.gauge("microseg_policy_version", "Version of the policy enforcing now.");
  text.sample("microseg_policy_version", {}, static_cast<double>(policy_version_));
  text.counter("microseg_policy_reloads_total", "Policy reloads by result.");
  text.sample("microseg_policy_reloads_total", {{"result", "applied"}},
              static_cast<double>(reloads_applied_));
  text.sample("microseg_policy_reloads_total", {{"result", "failed"}},
              static_cast<double>(reloads_failed_));
  text.counter("microseg_policy_incremental_applies_total",
               "Policy versions applied through the change compiler (the others in full).");
  text.sample("microseg_policy_incremental_applies_total", {},
              static_cast<double>(incremental_applies_));
  text.counter("microseg_policy_incremental_mismatches_total",
               "Changes whose fast-path result differed from the full compile (then corrected).");
  text.sample("microseg_policy_incremental_mismatches_total", {},
              static_cast<double>(incremental_mismatches_));
  text.gauge("microseg_policy_apply_seconds", "Duration of the last policy or cgroup apply.");
  text.sample("microseg_policy_apply_seconds", {}, last_apply_seconds_);
  text.gauge("microseg_policy_apply_stage_seconds",
             "Duration of each stage of the last policy apply.");
  const std::array<const char*, 5> stages = {"read", "parse", "compile", "prepare", "kernel"};
  for (size_t i = 0; i < stages.size(); i++) {
    text.sample("microseg_policy_apply_stage_seconds", {{"stage", stages[i]}},
                last_apply_stages_[i]);
  }
  text.gauge("microseg_workload_cgroups", "Cgroups bound to a workload.");
  text.sample("microseg_workload_cgroups", {}, static_cast<double>(bindings_.size()));

  text.counter("microseg_rule_hits_total", "Verdicts per rule, by the verdict the rule gives.");
  if (auto hits = datapath_->ruleHits()) {
    const auto names = ruleNames(*policy_, kernel_rule_ids_);
    for (const auto& [id, count] : *hits) {
      if (auto rule = names.find(id); rule != names.end()) {
        text.sample("microseg_rule_hits_total",
                    {{"rule", rule->second.name}, {"verdict", verdictName(rule->second.verdict)}},
                    static_cast<double>(count));
      }
    }
  }
  text.counter("microseg_datapath_reason_total",
               "Datapath outcomes other than plain verdicts, including lost events.");
  if (auto reasons = datapath_->reasonCounts()) {
    for (size_t reason = 0; reason < reasons->size(); reason++) {
      if (const char* name = reasonName(reason)) {
        text.sample("microseg_datapath_reason_total", {{"reason", name}},
                    static_cast<double>((*reasons)[reason]));
      }
    }
  }
  text.counter("microseg_flow_records_total", "Flow records exported (to the log or spool).");
  text.sample("microseg_flow_records_total", {}, static_cast<double>(recordsExported()));
  text.counter("microseg_flow_records_dropped_total",
               "Flow records the agent could not write or had to drop.");
  text.sample("microseg_flow_records_dropped_total", {},
              static_cast<double>(recordsDropped() + (spool_ ? spool_->droppedTotal() : 0)));
  if (spool_) {
    text.gauge("microseg_spool_records", "Records spooled, not yet acknowledged by the collector.");
    text.sample("microseg_spool_records", {}, static_cast<double>(spool_->pendingRecords()));
    text.gauge("microseg_collector_connected", "1 while the collector stream is up.");
    text.sample("microseg_collector_connected", {}, collector_->connected() ? 1 : 0);
    text.gauge("microseg_collector_failed_attempts",
               "Attempts to reach the collector that failed since its stream was last up.");
    text.sample("microseg_collector_failed_attempts", {},
                static_cast<double>(collector_->failedAttempts()));
  }
  metrics_->publish(text.text());
}

namespace {

double millis(std::chrono::nanoseconds duration) {
  return std::chrono::duration<double, std::milli>(duration).count();
}

}  // namespace

// Records how long each stage took, for the metrics, and returns the total in ms.
double Agent::recordApplyStages(const std::array<double, 5>& stages_ms) {
  double total_ms = 0;
  for (size_t i = 0; i < stages_ms.size(); i++) {
    last_apply_stages_[i] = stages_ms[i] / 1000.0;
    total_ms += stages_ms[i];
  }
  last_apply_seconds_ = total_ms / 1000.0;
  return total_ms;
}

Status Agent::applyPolicy(policy::IndexedPolicy compiled, const policy::LoadTimes& times,
                          ApplyKind kind) {
  using Clock = std::chrono::steady_clock;
  auto started = Clock::now();
  auto cgroups = listCgroups(attach_cgroup_);
  if (!cgroups) {
    return cgroups.error();
  }
  auto bindings = bindWorkloads(compiled.compiled, *cgroups);
  auto kernel_ids = rule_ids_.assign(compiled.compiled);
  auto bank = buildBank(compiled.compiled, bindings, kernel_ids);
  auto names = ruleNames(compiled.compiled, kernel_ids);
  const size_t entries = bank.verdictEntries();
  auto prepared = Clock::now();
  const uint64_t version = kind == ApplyKind::NewVersion ? policy_version_ + 1 : policy_version_;
  if (auto applied = datapath_->apply(std::move(bank), std::move(names), version); !applied) {
    return applied.error().wrap("apply policy");
  }
  auto enforcing = Clock::now();
  policy_version_ = version;
  policy_ = std::make_shared<const policy::CompiledPolicy>(std::move(compiled.compiled));
  compile_index_ = std::move(compiled.index);
  bindings_ = std::move(bindings);
  kernel_rule_ids_ = std::move(kernel_ids);
  // When settling, the ring buffer was drained before the change enforced: what it holds now
  // comes from the new version and is named with it.
  updateRecorder(*cgroups, kind == ApplyKind::NewVersion);
  publishControlState(std::move(*cgroups));

  const std::array<double, 5> stages = {millis(times.read), millis(times.parse),
                                        millis(times.compile), millis(prepared - started),
                                        millis(enforcing - prepared)};
  const ApplyStats& kernel = datapath_->lastApplyStats();
  const size_t kernel_changed = kernel.entries_written + kernel.entries_deleted;
  if (kind == ApplyKind::NewVersion) {
    const double total_ms = recordApplyStages(stages);
    logger("policy")->info(
        "policy applied version={} hash={} rules={} entries={} workload_cgroups={} "
        "read_ms={:.1f} parse_ms={:.1f} compile_ms={:.1f} prepare_ms={:.1f} kernel_ms={:.1f} "
        "took_ms={:.1f} kernel_changed={} kernel_diff_ms={:.1f} kernel_write_ms={:.2f}",
        policy_version_, policy_->content_hash.substr(0, 12), policy_->rules.size(), entries,
        bindings_.size(), stages[0], stages[1], stages[2], stages[3], stages[4], total_ms,
        kernel_changed, millis(kernel.diff), millis(kernel.write));
  } else {
    reportSettled(kernel_changed, stages[2] + stages[3] + stages[4]);
  }
  catchUpInactiveBank();
  return {};
}

// The full compile after a change applied through the fast path must find the kernel already
// holding its result; any difference is a fault of the change compiler, corrected here.
void Agent::reportSettled(size_t kernel_changed, double took_ms) {
  if (kernel_changed == 0) {
    logger("policy")->debug("policy settled version={} took_ms={:.1f}", policy_version_,
                            took_ms);
    return;
  }
  incremental_mismatches_ += 1;
  logger("policy")->error(
      "the incremental apply of version {} differed from the full compile in {} kernel "
      "entries; the full result now enforces. Please report this with the policy change",
      policy_version_, kernel_changed);
}

// The fast path for a change of a few rules: compiles only what changed and writes only the
// entries that differ. Returns false when the change needs a full compile.
Result<bool> Agent::applyChange(const std::shared_ptr<const policy::Policy>& next,
                                const policy::LoadTimes& times) {
  using Clock = std::chrono::steady_clock;
  if (!compile_index_) {
    return false;
  }
  auto started = Clock::now();
  auto compiled = policy::compileChange(*compile_index_, *next);
  if (auto* why = std::get_if<policy::NotIncremental>(&compiled)) {
    logger("policy")->debug("compiling the whole policy reason=\"{}\"", why->reason);
    return false;
  }
  const auto& change = std::get<policy::CompiledChange>(compiled);
  auto compiled_at = Clock::now();

  std::map<uint32_t, uint32_t> added_ids;  // by the change's rule index
  std::map<uint32_t, RuleName> added_names;  // by kernel id
  for (const auto& rule : change.added_rules) {
    const uint32_t id = rule_ids_.idOf(rule.name);
    added_ids[rule.index] = id;
    if (id != MSEG_RULE_NONE) {
      added_names[id] = RuleName{rule.name, static_cast<uint8_t>(rule.verdict)};
    }
  }
  std::vector<uint32_t> removed_ids;
  for (uint32_t index : change.removed_rules) {
    removed_ids.push_back(kernel_rule_ids_.at(index));
  }
  const BankDelta delta =
      buildBankDelta(change, policy_->workloads, bindings_, kernel_rule_ids_, added_ids);
  drainEvents();  // what the old version reported is named with it (see applyPolicy)
  auto prepared = Clock::now();
  if (auto applied =
          datapath_->applyDelta(delta, added_names, removed_ids, policy_version_ + 1);
      !applied) {
    logger("policy")->warn("could not write the change alone, writing the whole policy err={}",
                           applied.error().message());
    return false;
  }
  auto enforcing = Clock::now();
  policy_version_ += 1;
  incremental_applies_ += 1;

  const std::array<double, 5> stages = {millis(times.read), millis(times.parse),
                                        millis(compiled_at - started),
                                        millis(prepared - compiled_at),
                                        millis(enforcing - prepared)};
  const double total_ms = recordApplyStages(stages);
  const ApplyStats& kernel = datapath_->lastApplyStats();
  logger("policy")->info(
      "policy applied version={} hash={} incremental=true rules_added={} rules_removed={} "
      "read_ms={:.1f} parse_ms={:.1f} compile_ms={:.1f} prepare_ms={:.1f} kernel_ms={:.1f} "
      "took_ms={:.1f} kernel_changed={} kernel_diff_ms={:.1f} kernel_write_ms={:.2f}",
      policy_version_, next->content_hash.substr(0, 12), change.added_rules.size(),
      change.removed_rules.size(), stages[0], stages[1], stages[2], stages[3], stages[4],
      total_ms, kernel.entries_written + kernel.entries_deleted, millis(kernel.diff),
      millis(kernel.write));
  return true;
}

// Runs after the new policy enforces: the next change then writes only its difference.
void Agent::catchUpInactiveBank() {
  auto started = std::chrono::steady_clock::now();
  if (auto caught_up = datapath_->catchUpInactiveBank(); !caught_up) {
    logger("policy")->warn("the next policy change will rewrite a whole bank err={}",
                           caught_up.error().message());
    return;
  }
  logger("policy")->debug("inactive bank caught up took_ms={:.1f}",
                          millis(std::chrono::steady_clock::now() - started));
}

Status Agent::rebindCgroups() {
  auto cgroups = listCgroups(attach_cgroup_);
  if (!cgroups) {
    return cgroups.error();
  }
  auto bindings = bindWorkloads(*policy_, *cgroups);
  bool same = bindings.size() == bindings_.size();
  for (size_t i = 0; same && i < bindings.size(); i++) {
    same = bindings[i].cgroup_id == bindings_[i].cgroup_id &&
           bindings[i].workload_id == bindings_[i].workload_id;
  }
  if (same) {
    publishControlState(std::move(*cgroups));  // cgroups nothing selects may have changed
    return {};
  }
  auto bank = buildBank(*policy_, bindings, kernel_rule_ids_);
  if (auto applied = datapath_->apply(std::move(bank), ruleNames(*policy_, kernel_rule_ids_),
                                      policy_version_ + 1);
      !applied) {
    return applied.error().wrap("apply cgroup change");
  }
  policy_version_ += 1;
  updateRecorder(*cgroups);
  const auto [bound, unbound] = bindingChanges(bindings_, bindings);
  logger("agent")->debug("workload cgroups changed bound={} unbound={} workload_cgroups={} "
                         "policy_version={}",
                         bound, unbound, bindings.size(), policy_version_);
  cgroup_changes_.record(bound, unbound, bindings.size(), policy_version_,
                         std::chrono::steady_clock::now());
  bindings_ = std::move(bindings);
  writeStatus();
  catchUpInactiveBank();
  publishControlState(std::move(*cgroups));
  return {};
}

void Agent::reloadPolicy(ReloadTrigger trigger) {
  auto log = logger("policy");
  log->info("reloading policy file={}", config_.policy_path);
  notifier_.reloading("reloading policy " + config_.policy_path);
  auto outcome = ReloadOutcome::Result::Applied;
  if (auto applied = loadAndApplyPolicy(trigger, outcome); !applied) {
    last_error_ = applied.error().message();
    reloads_failed_ += 1;
    control_state_->recordReload(outcome, last_error_);
    if (outcome == ReloadOutcome::Result::Rejected) {
      log->error("policy rejected, version {} keeps enforcing: fix the file (a change of the "
                 "policy file reloads it) or send SIGHUP err={}", policy_version_, last_error_);
    } else {
      log->error("policy not applied, the previous version keeps enforcing err={}", last_error_);
    }
  } else if (outcome == ReloadOutcome::Result::Applied) {
    last_error_.clear();
    reloads_applied_ += 1;
    control_state_->recordReload(outcome, "");
  } else if (!last_error_.empty()) {
    // The files are back to what enforces (a rejected edit reverted): nothing to apply, and
    // the error no longer describes them.
    log->info("policy files match version {} again; the earlier error is resolved",
              policy_version_);
    last_error_.clear();
    control_state_->recordReload(ReloadOutcome::Result::Applied, "");
  }
  writeStatus();
  notifier_.ready(serviceStatus());
}

// A change of a few rules enforces through the fast path first, then the whole policy is
// compiled and applied as the same version to settle everything else (the compiled policy
// that control calls and flow records read, warnings about every rule); that must change
// nothing in the kernel. `outcome` says whether a failure was the policy's (Rejected) or the
// kernel's (Failed), or None when an unchanged file needed nothing.
Status Agent::loadAndApplyPolicy(ReloadTrigger trigger, ReloadOutcome::Result& outcome) {
  outcome = ReloadOutcome::Result::Rejected;
  policy::LoadTimes times;
  auto next = loadPolicy(times);
  if (!next) {
    return next.error();
  }
  // Editors and configuration management rewrite files unchanged; SIGHUP always recompiles
  // (a user may have been created on the host since).
  if (trigger == ReloadTrigger::FileChanged && parsed_policy_ &&
      (*next)->content_hash == parsed_policy_->content_hash) {
    logger("policy")->info("policy file unchanged, version {} keeps enforcing hash={}",
                           policy_version_, (*next)->content_hash.substr(0, 12));
    outcome = ReloadOutcome::Result::None;
    return {};
  }
  outcome = ReloadOutcome::Result::Failed;
  auto fast = applyChange(*next, times);
  if (!fast) {
    return fast.error();
  }
  if (*fast) {
    outcome = ReloadOutcome::Result::Applied;
    parsed_policy_ = *next;
    last_error_.clear();
    writeStatus();  // the new version enforces already; settling takes longer
  }
  auto settled = compileAndApply(*next, times, *fast ? ApplyKind::Settle : ApplyKind::NewVersion);
  if (!settled && *fast) {
    // The change enforces, but what describes it (compiled policy, index) is the old one's:
    // forget the index so the next change is compiled in full.
    compile_index_.reset();
    parsed_policy_.reset();
    logger("policy")->error("version {} enforces, but compiling it in full failed; send SIGHUP "
                            "to retry err={}", policy_version_, settled.error().message());
    return {};
  }
  if (!settled) {
    outcome = settled.error().code() == EINVAL ? ReloadOutcome::Result::Rejected
                                               : ReloadOutcome::Result::Failed;
    return settled;
  }
  outcome = ReloadOutcome::Result::Applied;
  parsed_policy_ = std::move(*next);
  return {};
}

Status Agent::compileAndApply(const std::shared_ptr<const policy::Policy>& policy,
                              policy::LoadTimes& times, ApplyKind kind) {
  auto compiled = compilePolicy(policy, times);
  if (!compiled) {
    return compiled.error();
  }
  return applyPolicy(std::move(*compiled), times, kind);
}

void Agent::logCounterChanges() {
  auto hits = datapath_->ruleHits();
  if (!hits) {
    logger("agent")->warn("cannot read rule counters err={}", hits.error().message());
    return;
  }
  std::map<uint32_t, RuleName> names = ruleNames(*policy_, kernel_rule_ids_);
  for (const auto& [id, total] : *hits) {
    uint64_t before = last_hits_[id];
    auto rule = names.find(id);
    if (total <= before || rule == names.end()) {
      continue;
    }
    if (rule->second.verdict == MSEG_VERDICT_DENY) {
      logger("agent")->info("traffic denied rule={} new={} total={}", rule->second.name,
                            total - before, total);
    } else if (rule->second.verdict == MSEG_VERDICT_AUDIT) {
      logger("agent")->info("traffic would be denied (audit) rule={} new={} total={}",
                            rule->second.name, total - before, total);
    }
  }
  last_hits_ = std::move(*hits);
}

// One line for `systemctl status`: what enforces now, and why the last reload failed if it did.
std::string Agent::serviceStatus() const {
  std::string line = "enforcing policy version " + std::to_string(policy_version_) + " (" +
                     policy_->content_hash.substr(0, 12) + ") on " + attach_cgroup_;
  if (!last_error_.empty()) {
    line += "; last reload rejected: " + last_error_;
  }
  return line;
}

void Agent::writeStatus(const char* state) const {
  StatusFile status;
  status.pid = getpid();
  status.state = state;
  status.cgroup = attach_cgroup_;
  status.pin_dir = config_.pin_dir;
  status.policy_file = config_.policy_path;
  status.policy_version = policy_version_;
  // The parsed policy is the enforcing one as soon as a change is applied, before it settles.
  status.policy_hash = parsed_policy_ ? parsed_policy_->content_hash : policy_->content_hash;
  status.last_error = last_error_;
  auto written = writeStatusFile(config_.state_dir, status);
  if (!written && status_file_problem_.due(std::chrono::steady_clock::now())) {
    logger("agent")->warn("cannot write the status file, it keeps showing the last state written "
                          "(microsegctl status asks the agent and is current); free space on "
                          "the file system of state_dir {} err={}",
                          config_.state_dir, written.error().message());
  } else if (written && status_file_problem_.ended()) {
    logger("agent")->info("status file written again path={}",
                          statusFilePath(config_.state_dir));
  }
}

int Agent::run() {
  auto log = logger("agent");
  int signal_fd = signalDescriptor();
  int tick_fd = tickDescriptor();
  if (signal_fd < 0 || tick_fd < 0) {
    log->critical("cannot set up the event loop err={}", std::strerror(errno));
    return 1;
  }
  pollfd fds[5] = {{signal_fd, POLLIN, 0},
                   {watcher_.fd(), POLLIN, 0},
                   {tick_fd, POLLIN, 0},
                   {events_ != nullptr ? ring_buffer__epoll_fd(events_) : -1, POLLIN, 0},
                   {policy_watcher_.fd(), POLLIN, 0}};
  // The tick pings the watchdog once a second, so WatchdogSec= must be well above that.
  notifier_.ready(serviceStatus());
  for (;;) {
    if (poll(fds, 5, -1) < 0) {
      if (errno == EINTR) {
        continue;
      }
      log->critical("poll failed err={}", std::strerror(errno));
      return 1;
    }
    if (fds[3].revents & POLLIN) {
      drainEvents();
    }
    if (fds[0].revents & POLLIN) {
      signalfd_siginfo info{};
      while (read(signal_fd, &info, sizeof(info)) == sizeof(info)) {
        if (info.ssi_signo == SIGHUP) {
          reloadPolicy(ReloadTrigger::Signal);
          continue;
        }
        tick();
        reportCgroupChanges(cgroup_changes_.take());
        log->info("stopping on signal {}; pinned programs keep enforcing policy_version={} "
                  "records_exported={} records_dropped={}",
                  strsignal(info.ssi_signo), policy_version_, recordsExported(),
                  recordsDropped());
        notifier_.stopping("stopping; pinned programs keep enforcing policy version " +
                           std::to_string(policy_version_));
        writeStatus("stopped");
        close(signal_fd);
        close(tick_fd);
        return 0;
      }
    }
    if (fds[1].revents & POLLIN) {
      auto changed = watcher_.drain();
      if (!changed) {
        log->warn("cgroup watch failed, new cgroups may go unlabelled err={}",
                  changed.error().message());
      } else if (*changed) {
        if (auto rebound = rebindCgroups(); !rebound) {
          log->error("cannot label changed cgroups err={}", rebound.error().message());
          control_state_->recordError("cannot label changed cgroups: " +
                                      rebound.error().message());
        }
      }
    }
    if ((fds[4].revents & POLLIN) && policy_watcher_.changed()) {
      reloadPolicy(ReloadTrigger::FileChanged);
    }
    if (fds[2].revents & POLLIN) {
      uint64_t expirations = 0;
      (void)!read(tick_fd, &expirations, sizeof(expirations));
      tick();
    }
  }
}

}  // namespace mseg::agent
