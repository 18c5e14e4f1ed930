#include "control_server.hpp"

#include <grp.h>
#include <malloc.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>

#include <grpcpp/grpcpp.h>

#include "control_limits.hpp"
#include "datapath.hpp"
#include "logging.hpp"
#include "microseg/control/v1/control.grpc.pb.h"
#include "mseg/policy/compiler.hpp"
#include "mseg/policy/diff.hpp"
#include "mseg/policy/source.hpp"
#include "mseg/policy/trace.hpp"
#include "mseg/unique_fd.hpp"
#include "reasons.hpp"

namespace mseg::agent {
namespace {

namespace fs = std::filesystem;
namespace cv1 = microseg::control::v1;
namespace tv1 = microseg::telemetry::v1;

// Calls run on gRPC's threads; this bounds how many a burst of callers can occupy. Long calls
// are admitted up to their limits (control_limits.hpp), which leave threads for short calls
// and for gRPC's own pollers: a call that finds no thread is refused ("Server Threadpool
// Exhausted").
constexpr int kMaxServerThreads = 16;
static_assert(kMaxFollowers + kMaxDiffsAdmitted + 4 <= kMaxServerThreads,
              "followers and diffs must leave threads for short calls");
// A diff of two very different large policies has millions of path changes; nobody reads
// past this many, and the reply says it was cut.
constexpr int kMaxPathChanges = 10000;
// How often a follower, or a diff waiting its turn, checks whether its caller went away.
constexpr auto kFollowPoll = std::chrono::milliseconds(250);

// Admits at most `limit` callers of one kind at once. Thread-safe.
class CallLimit {
public:
  explicit CallLimit(int limit) : limit_(limit) {}

  // A place taken while it lives, when admitted().
  class Place {
  public:
    explicit Place(CallLimit& limit) : limit_(limit), admitted_(limit.used_.fetch_add(1) <
                                                                limit.limit_) {}
    ~Place() { limit_.used_.fetch_sub(1); }
    Place(const Place&) = delete;
    Place& operator=(const Place&) = delete;
    bool admitted() const { return admitted_; }

  private:
    CallLimit& limit_;
    const bool admitted_;
  };

private:
  const int limit_;
  std::atomic<int> used_{0};
};

uint64_t unixNanosNow() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

const char* verdictWord(policy::Verdict verdict) {
  return verdict == policy::Verdict::None ? "unmanaged"
                                          : verdictName(static_cast<uint8_t>(verdict));
}

const char* directionWord(policy::Direction direction) {
  return direction == policy::Direction::Egress ? "egress" : "ingress";
}

const char* directionMode(const policy::CompiledWorkload& workload, policy::Direction direction) {
  const bool egress = direction == policy::Direction::Egress;
  if (!(egress ? workload.egress_managed : workload.ingress_managed)) {
    return "unmanaged";
  }
  return (egress ? workload.egress_audit : workload.ingress_audit) ? "audit" : "enforce";
}

const char* reloadWord(ReloadOutcome::Result result) {
  switch (result) {
    case ReloadOutcome::Result::Applied: return "applied";
    case ReloadOutcome::Result::Rejected: return "rejected";
    case ReloadOutcome::Result::Failed: return "failed";
    case ReloadOutcome::Result::None: break;
  }
  return "";
}

// The policy a diff request proposes, compiled on this host: one file's text, or the files of
// a directory as microsegctl read them.
Result<policy::CompiledPolicy> compileProposed(const cv1::DiffPolicyRequest& request,
                                              const std::string& source,
                                              policy::Diagnostics& diagnostics) {
  if (request.files_size() == 0) {
    return policy::loadPolicyText(request.policy_text(), source, diagnostics);
  }
  std::vector<std::pair<std::string, std::string>> files;
  for (const auto& file : request.files()) {
    files.emplace_back(file.name(), file.text());
  }
  auto merged = policy::parsePolicyDirectoryTexts(source, files, diagnostics);
  if (!merged) {
    return merged.error();
  }
  return policy::compilePolicy(*merged, diagnostics);
}

grpc::Status callError(const Error& error) {
  return grpc::Status(error.code() == ENOENT ? grpc::StatusCode::NOT_FOUND
                                             : grpc::StatusCode::INVALID_ARGUMENT,
                      error.message());
}

grpc::Status starting() {
  return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                      "the agent is starting and has not applied a policy yet; try again");
}

// Why the traced verdict is what it is, in a sentence an operator can act on.
std::string explain(const policy::TraceResult& trace, size_t cgroups_here) {
  const std::string& workload = trace.workload->name;
  const bool egress = trace.direction == policy::Direction::Egress;
  std::string text;
  if (trace.decision.verdict == policy::Verdict::None) {
    text = "no rule selects `" + workload + "` as a " + (egress ? "source" : "destination") +
           ", so its " + directionWord(trace.direction) + " traffic is not judged and passes";
  } else if (trace.decision.rule_index == policy::kRuleDefaultDeny) {
    text = trace.decision.verdict == policy::Verdict::Audit
               ? "no rule allows it; its default deny is in audit mode, so it passes and is "
                 "reported as would-deny"
               : "no rule allows it: default deny";
  } else {
    text = "decided by rule `" + trace.rule + "`";
    if (trace.decision.verdict == policy::Verdict::Audit) {
      text += " in audit mode: it passes and is reported as would-deny";
    }
  }
  if (cgroups_here == 0 && !trace.workload->cgroup_patterns.empty()) {
    text += "; `" + workload + "` runs in no cgroup on this host now, the verdict applies once "
            "it does";
  }
  return text;
}

std::optional<tv1::Verdict> verdictFilter(const std::string& word) {
  if (word == "allowed") {
    return tv1::VERDICT_ALLOW;
  }
  if (word == "denied") {
    return tv1::VERDICT_DENY;
  }
  if (word == "audit") {
    return tv1::VERDICT_AUDIT;
  }
  return std::nullopt;
}

std::vector<std::string> cgroupPaths(
    const std::shared_ptr<const std::vector<CgroupEntry>>& cgroups) {
  std::vector<std::string> paths;
  if (cgroups) {
    for (const auto& cgroup : *cgroups) {
      paths.push_back(cgroup.relative_path);
    }
  }
  return paths;
}

void addCgroupChanges(const policy::PolicyDiff& diff, cv1::PolicyDiff& reply) {
  for (const auto& cgroup : diff.cgroups) {
    if (reply.cgroups_size() == kMaxPathChanges) {
      reply.set_cgroups_truncated(true);
      break;
    }
    auto* change = reply.add_cgroups();
    change->set_cgroup(cgroup.cgroup);
    change->set_old_workload(cgroup.old_workload);
    change->set_new_workload(cgroup.new_workload);
    change->set_cgroups_below(cgroup.cgroups_below);
  }
  for (const auto& workload : diff.removed_workloads) {
    reply.add_removed_workloads(workload);
  }
}

}  // namespace

void ControlState::publishPolicy(std::shared_ptr<const policy::CompiledPolicy> policy,
                                 uint64_t version, std::vector<WorkloadBinding> bindings,
                                 std::vector<CgroupEntry> cgroups) {
  auto shared_bindings = std::make_shared<const std::vector<WorkloadBinding>>(std::move(bindings));
  auto shared_cgroups = std::make_shared<const std::vector<CgroupEntry>>(std::move(cgroups));
  std::lock_guard lock(mutex_);
  snapshot_.ready = true;
  snapshot_.policy = std::move(policy);
  snapshot_.policy_version = version;
  snapshot_.bindings = std::move(shared_bindings);
  snapshot_.cgroups = std::move(shared_cgroups);
}

void ControlState::publishExporter(const ExporterStats& exporter) {
  std::lock_guard lock(mutex_);
  snapshot_.exporter = exporter;
}

void ControlState::recordReload(ReloadOutcome::Result result, const std::string& error) {
  const uint64_t now = unixNanosNow();
  std::lock_guard lock(mutex_);
  snapshot_.last_reload = {result, now, error};
  if (!error.empty()) {
    snapshot_.last_error = error;
    snapshot_.last_error_unix_nano = now;
  } else if (result == ReloadOutcome::Result::Applied) {
    // The policy file applies again, and every cgroup was bound anew with it: the error before
    // is history, as in status.json.
    snapshot_.last_error.clear();
    snapshot_.last_error_unix_nano = 0;
  }
}

void ControlState::recordError(const std::string& error) {
  const uint64_t now = unixNanosNow();
  std::lock_guard lock(mutex_);
  snapshot_.last_error = error;
  snapshot_.last_error_unix_nano = now;
}

ControlSnapshot ControlState::snapshot() const {
  std::lock_guard lock(mutex_);
  return snapshot_;
}

struct ControlServer::Service final : cv1::Control::Service {
  explicit Service(std::shared_ptr<ControlState> state) : state_(std::move(state)) {}

  grpc::Status GetStatus(grpc::ServerContext*, const cv1::GetStatusRequest*,
                         cv1::AgentStatus* reply) override {
    const ControlSnapshot snapshot = state_->snapshot();
    if (!snapshot.ready) {
      return starting();
    }
    const AgentIdentity& identity = state_->identity();
    reply->set_agent_version(identity.version);
    reply->set_pid(static_cast<uint32_t>(identity.pid));
    reply->set_started_unix_nano(identity.started_unix_nano);
    reply->set_attach_cgroup(identity.attach_cgroup);
    reply->set_pin_dir(identity.pin_dir);
    reply->set_policy_file(identity.policy_file);
    reply->set_policy_version(snapshot.policy_version);
    reply->set_policy_hash(snapshot.policy->content_hash);
    for (const auto& segment : snapshot.policy->segments) {
      auto* mode = reply->add_segments();
      mode->set_name(segment.name);
      mode->set_mode(segment.audit ? "audit" : "enforce");
      mode->set_rules(segment.rule_count);
    }
    reply->set_rule_count(static_cast<uint32_t>(snapshot.policy->rules.size()));
    reply->set_workload_cgroups(static_cast<uint32_t>(snapshot.bindings->size()));
    addCounters(identity.pin_dir, *reply);
    addExporter(snapshot.exporter, *reply->mutable_exporter());
    reply->mutable_exporter()->set_telemetry_off(!identity.telemetry);
    if (snapshot.last_reload.result != ReloadOutcome::Result::None) {
      auto* reload = reply->mutable_last_reload();
      reload->set_result(reloadWord(snapshot.last_reload.result));
      reload->set_time_unix_nano(snapshot.last_reload.time_unix_nano);
      reload->set_error(snapshot.last_reload.error);
    }
    reply->set_last_error(snapshot.last_error);
    reply->set_last_error_unix_nano(snapshot.last_error_unix_nano);
    return grpc::Status::OK;
  }

  grpc::Status DiffPolicy(grpc::ServerContext* context, const cv1::DiffPolicyRequest* request,
                          cv1::PolicyDiff* reply) override {
    CallLimit::Place place(diffs_);
    if (!place.admitted()) {
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          fmt::format("{} policy diffs are already being compared or waiting, "
                                      "the most the agent takes at once (it compiles one at a "
                                      "time to bound its memory); try again when they are done",
                                      kMaxDiffsAdmitted));
    }
    std::unique_lock turn(compiling_, std::defer_lock);
    while (!turn.try_lock_for(kFollowPoll)) {
      if (context->IsCancelled()) {
        return grpc::Status(grpc::StatusCode::CANCELLED,
                            "the caller gave up while other policy diffs were compiling");
      }
    }
    grpc::Status status = diffPolicy(*request, *reply);
    // The proposed policy was compiled on a gRPC thread, in that thread's malloc arena; glibc
    // keeps freed arena memory, so without this every diff of a large policy would leave the
    // agent's resident memory higher (about 80 MB more per diff at 100,000 rules).
    malloc_trim(0);
    return status;
  }

  grpc::Status diffPolicy(const cv1::DiffPolicyRequest& request, cv1::PolicyDiff& reply) {
    const ControlSnapshot snapshot = state_->snapshot();
    if (!snapshot.ready) {
      return starting();
    }
    policy::Diagnostics diagnostics;
    const std::string source = request.source_name().empty() ? "policy" : request.source_name();
    auto proposed = compileProposed(request, source, diagnostics);
    for (const auto* found : diagnostics.sorted()) {
      auto* diagnostic = reply.add_diagnostics();
      diagnostic->set_severity(found->severity == policy::Severity::Error ? "error" : "warning");
      diagnostic->set_file(found->source);
      diagnostic->set_line(found->position.line);
      diagnostic->set_column(found->position.column);
      diagnostic->set_message(found->message);
    }
    reply.set_valid(proposed.ok());
    reply.set_running_version(snapshot.policy_version);
    reply.set_running_hash(snapshot.policy->content_hash);
    if (!proposed) {
      return grpc::Status::OK;
    }
    reply.set_new_hash(proposed->content_hash);

    const policy::PolicyDiff diff =
        policy::diffPolicies(*snapshot.policy, *proposed, cgroupPaths(snapshot.cgroups));
    addCgroupChanges(diff, reply);
    for (const auto& rule : diff.rules) {
      auto* change = reply.add_rules();
      change->set_rule(rule.rule);
      change->set_change(rule.kind == policy::RuleChange::Kind::Added     ? "added"
                         : rule.kind == policy::RuleChange::Kind::Removed ? "removed"
                                                                          : "changed");
      if (rule.old_verdict != policy::Verdict::None) {
        change->set_old_verdict(verdictWord(rule.old_verdict));
      }
      if (rule.new_verdict != policy::Verdict::None) {
        change->set_new_verdict(verdictWord(rule.new_verdict));
      }
      change->set_location(rule.location);
      change->set_detail(rule.detail);
    }
    for (const auto& path : diff.paths) {
      if (reply.paths_size() == kMaxPathChanges) {
        reply.set_paths_truncated(true);
        break;
      }
      auto* change = reply.add_paths();
      change->set_workload(path.workload);
      change->set_peer(path.peer);
      change->set_direction(directionWord(path.direction));
      change->set_protocol(policy::pathProtocolName(path.protocol));
      change->set_first_port(path.first_port);
      change->set_last_port(path.last_port);
      change->set_old_verdict(verdictWord(path.old_verdict));
      change->set_new_verdict(verdictWord(path.new_verdict));
      change->set_change(path.opens() ? "opens" : path.closes() ? "closes" : "changes");
      change->set_old_rule(path.old_rule);
      change->set_new_rule(path.new_rule);
    }
    return grpc::Status::OK;
  }

  grpc::Status TracePolicy(grpc::ServerContext*, const cv1::TraceRequest* request,
                           cv1::Trace* reply) override {
    const ControlSnapshot snapshot = state_->snapshot();
    if (!snapshot.ready) {
      return starting();
    }
    static const std::map<std::string, policy::Protocol> kProtocols = {
        {"tcp", policy::Protocol::Tcp},
        {"udp", policy::Protocol::Udp},
        {"icmp", policy::Protocol::Icmp},
        {"icmpv6", policy::Protocol::Icmpv6}};
    auto protocol = kProtocols.find(request->protocol());
    if (protocol == kProtocols.end()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "protocol `" + request->protocol() + "`: expected tcp, udp or icmp");
    }
    if (request->port_set() && request->port() > 65535) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "port " + std::to_string(request->port()) + " is above 65535");
    }
    policy::TraceQuery query{request->from(), request->to(), protocol->second, std::nullopt};
    if (request->port_set()) {
      query.port = static_cast<uint16_t>(request->port());
    }
    auto traced = policy::tracePath(*snapshot.policy, query);
    if (!traced) {
      return callError(traced.error());
    }

    for (const auto& binding : *snapshot.bindings) {
      if (binding.workload_id == traced->workload->id) {
        reply->add_workload_cgroups(binding.cgroup_path);
      }
    }
    reply->set_verdict(verdictWord(traced->decision.verdict));
    reply->set_rule(traced->rule);
    reply->set_rule_location(traced->rule_location);
    reply->set_direction(directionWord(traced->direction));
    reply->set_workload(traced->workload->name);
    reply->set_peer(traced->peer);
    reply->set_address(policy::formatAddress(traced->address));
    reply->set_protocol(traced->protocol == policy::Protocol::Tcp    ? "tcp"
                        : traced->protocol == policy::Protocol::Udp  ? "udp"
                        : traced->protocol == policy::Protocol::Icmp ? "icmp"
                                                                     : "icmpv6");
    reply->set_port(traced->port);
    reply->set_policy_version(snapshot.policy_version);
    reply->set_explanation(explain(*traced, static_cast<size_t>(reply->workload_cgroups_size())));
    return grpc::Status::OK;
  }

  grpc::Status ListWorkloads(grpc::ServerContext*, const cv1::ListWorkloadsRequest*,
                             cv1::WorkloadList* reply) override {
    const ControlSnapshot snapshot = state_->snapshot();
    if (!snapshot.ready) {
      return starting();
    }
    reply->set_attach_cgroup(state_->identity().attach_cgroup);
    std::map<uint32_t, std::string> name_of;
    for (const auto& workload : snapshot.policy->workloads) {
      name_of[workload.id] = workload.name;
      auto* info = reply->add_workloads();
      info->set_name(workload.name);
      info->mutable_labels()->insert(workload.labels.begin(), workload.labels.end());
      for (const auto& pattern : workload.cgroup_patterns) {
        info->add_cgroup_patterns(pattern);
      }
      for (uint32_t uid : workload.uids) {
        info->add_uids(uid);
      }
      for (const auto& user : workload.unresolved_users) {
        info->add_unresolved_users(user);
      }
      info->set_egress(directionMode(workload, policy::Direction::Egress));
      info->set_ingress(directionMode(workload, policy::Direction::Ingress));
    }

    // The kernel gives a cgroup the workload of its deepest selected ancestor (itself first).
    std::map<std::string, std::string> bound;
    for (const auto& binding : *snapshot.bindings) {
      bound[binding.cgroup_path] = name_of[binding.workload_id];
    }
    std::vector<CgroupEntry> cgroups = *snapshot.cgroups;
    std::sort(cgroups.begin(), cgroups.end(), [](const CgroupEntry& a, const CgroupEntry& b) {
      return a.relative_path < b.relative_path;
    });
    for (const auto& cgroup : cgroups) {
      auto* info = reply->add_cgroups();
      info->set_cgroup(cgroup.relative_path);
      info->set_cgroup_id(cgroup.id);
      for (std::string path = cgroup.relative_path;;) {
        if (auto found = bound.find(path); found != bound.end()) {
          info->set_workload(found->second);
          info->set_inherited(path != cgroup.relative_path);
          break;
        }
        if (path.empty()) {
          break;
        }
        auto slash = path.rfind('/');
        path = slash == std::string::npos ? "" : path.substr(0, slash);
      }
    }
    return grpc::Status::OK;
  }

  grpc::Status WatchFlows(grpc::ServerContext* context, const cv1::WatchFlowsRequest* request,
                          grpc::ServerWriter<tv1::FlowRecord>* writer) override {
    // This older call has no way to say that records were skipped.
    return streamFlows(
        *context, *request, [&](const FlowRecord& record) { return writer->Write(record); },
        [](uint64_t) { return true; });
  }

  grpc::Status FollowFlows(grpc::ServerContext* context, const cv1::WatchFlowsRequest* request,
                           grpc::ServerWriter<cv1::FlowUpdate>* writer) override {
    cv1::FlowUpdate update;
    return streamFlows(
        *context, *request,
        [&](const FlowRecord& record) {
          *update.mutable_record() = record;
          return writer->Write(update);
        },
        [&](uint64_t skipped) {
          cv1::FlowUpdate notice;
          notice.set_skipped(skipped);
          return writer->Write(notice);
        });
  }

private:
  // The recent records that pass the request's filters, then with follow each new one as it
  // comes, through `send` (false: the caller went away). `skipped` hears how many records left
  // the ring before a slow follower read them. A follow the agent's stop ends is UNAVAILABLE.
  grpc::Status streamFlows(grpc::ServerContext& context, const cv1::WatchFlowsRequest& request,
                           const std::function<bool(const FlowRecord&)>& send,
                           const std::function<bool(uint64_t)>& skipped) {
    if (!state_->identity().telemetry) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          "the agent runs with --telemetry off: it records no flows (the "
                          "per-rule counters of `microsegctl status` still count)");
    }
    std::optional<tv1::Verdict> verdict;
    if (!request.verdict().empty()) {
      verdict = verdictFilter(request.verdict());
      if (!verdict) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            "verdict `" + request.verdict() +
                                "`: expected allowed, denied or audit");
      }
    }
    const std::string workload = request.workload();
    if (!workload.empty()) {
      const ControlSnapshot snapshot = state_->snapshot();
      if (!snapshot.ready) {
        return starting();
      }
      if (auto known = policy::findWorkload(*snapshot.policy, workload); !known) {
        return callError(known.error());
      }
    }
    std::optional<CallLimit::Place> follower;
    if (request.follow()) {
      follower.emplace(followers_);
      if (!follower->admitted()) {
        return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                            fmt::format("the agent already serves {} `flows --follow` callers, "
                                        "the most it serves at once (each holds one of the "
                                        "control socket's threads); stop one of them, or read "
                                        "`flows` without --follow",
                                        kMaxFollowers));
      }
    }
    const FlowRing::Filter filter = [&](const FlowRecord& record) {
      return (!verdict || record.verdict() == *verdict) &&
             (workload.empty() || record.workload().name() == workload);
    };

    FlowRing& flows = state_->flows();
    uint64_t position = 0;
    for (const auto& record : flows.recent(request.last(), filter, position)) {
      if (!send(record)) {
        return grpc::Status::OK;
      }
    }
    while (request.follow() && !context.IsCancelled() && !flows.closed()) {
      const FlowRing::Newer newer = flows.readNewer(position, filter, kFollowPoll);
      if (newer.skipped > 0 && !skipped(newer.skipped)) {
        return grpc::Status::OK;
      }
      for (const auto& record : newer.records) {
        if (!send(record)) {
          return grpc::Status::OK;
        }
      }
    }
    if (request.follow() && flows.closed()) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "the agent is stopping: the flow stream ends");
    }
    return grpc::Status::OK;
  }

  static void addCounters(const std::string& pin_dir, cv1::AgentStatus& reply) {
    auto counters = readPinnedCounters(pin_dir);
    if (!counters) {
      reply.set_counters_error(counters.error().message());
      return;
    }
    for (const auto& [id, rule] : counters->rule_names) {
      auto* counter = reply.add_rules();
      counter->set_rule(rule.name);
      counter->set_verdict(verdictName(rule.verdict));
      auto hits = counters->rule_hits.find(id);
      counter->set_hits(hits == counters->rule_hits.end() ? 0 : hits->second);
    }
    for (size_t reason = 0; reason < counters->reasons.size(); reason++) {
      if (const char* name = reasonName(reason)) {
        auto* counter = reply.add_reasons();
        counter->set_reason(name);
        counter->set_count(counters->reasons[reason]);
      }
    }
  }

  static void addExporter(const ExporterStats& stats, cv1::ExporterState& exporter) {
    exporter.set_flow_log(stats.flow_log);
    exporter.set_collector(stats.collector);
    exporter.set_collector_connected(stats.collector_connected);
    exporter.set_spool_records(stats.spool_records);
    exporter.set_spool_dropped(stats.spool_dropped);
    exporter.set_records_exported(stats.records_exported);
    exporter.set_records_dropped(stats.records_dropped);
  }

  std::shared_ptr<ControlState> state_;
  CallLimit followers_{kMaxFollowers};
  CallLimit diffs_{kMaxDiffsAdmitted};
  std::timed_mutex compiling_;  // held by the one diff that compiles
};

namespace {

Result<gid_t> groupId(const std::string& name) {
  group entry{};
  group* found = nullptr;
  std::vector<char> buffer(16384);
  int err = getgrnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found);
  if (err != 0) {
    return Error::fromErrno(err, "look up control group `" + name + "`");
  }
  if (found == nullptr) {
    return Error(ENOENT, "control group `" + name +
                             "` does not exist on this host: create it (groupadd " + name +
                             ") or give another --control-group");
  }
  return found->gr_gid;
}

// Creates the socket's directory when it is missing: only root (and the group) may enter it.
// An existing directory is left as it is: it may be shared, like /run.
Result<bool> prepareDirectory(const fs::path& directory, std::optional<gid_t> group) {
  struct stat info {};
  if (stat(directory.c_str(), &info) == 0) {
    if (!S_ISDIR(info.st_mode)) {
      return Error(ENOTDIR, "control socket directory " + directory.string() +
                                " is not a directory");
    }
    return false;
  }
  std::error_code err;
  fs::create_directories(directory.parent_path(), err);
  const mode_t mode = group ? 0750 : 0700;
  if (mkdir(directory.c_str(), mode) != 0) {
    return Error::fromErrno(errno, "create control socket directory " + directory.string());
  }
  if (chmod(directory.c_str(), mode) != 0 ||
      (group && chown(directory.c_str(), static_cast<uid_t>(-1), *group) != 0)) {
    return Error::fromErrno(errno, "set the owner and mode of " + directory.string());
  }
  return true;
}

// Removes a socket a crashed agent left, and refuses a path another agent answers on or that
// is not a socket: gRPC would otherwise unlink it and take it over.
Status clearStaleSocket(const std::string& path) {
  struct stat info {};
  if (lstat(path.c_str(), &info) != 0) {
    return errno == ENOENT ? Status{}
                           : Status(Error::fromErrno(errno, "control socket " + path));
  }
  if (!S_ISSOCK(info.st_mode)) {
    return Error(EEXIST, "control socket " + path +
                             " exists and is not a socket: remove it or give another "
                             "--control-socket");
  }
  UniqueFd probe(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
  if (probe.get() >= 0 &&
      connect(probe.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) == 0) {
    return Error(EADDRINUSE, "another microsegd serves the control socket " + path +
                                 ": stop it or give this agent another --control-socket");
  }
  if (unlink(path.c_str()) != 0) {
    return Error::fromErrno(errno, "remove stale control socket " + path);
  }
  return {};
}

// A directory the agent did not create may keep the group out although the socket lets it in,
// e.g. a RuntimeDirectory= with mode 0750: say so, since the agent must not change it.
void warnIfGroupCannotEnter(const fs::path& directory, gid_t gid, const std::string& group) {
  struct stat info {};
  if (stat(directory.c_str(), &info) != 0) {
    return;
  }
  const bool enters = (info.st_mode & S_IXOTH) != 0 ||
                      (info.st_gid == gid && (info.st_mode & S_IXGRP) != 0);
  if (!enters) {
    logger("rpc")->warn("members of group {} cannot reach the control socket: directory {} is "
                        "mode {:04o} with group id {}; make it searchable for them (chmod o+x, "
                        "or chgrp {} and chmod g+x)",
                        group, directory.string(), info.st_mode & 07777, info.st_gid, group);
  }
}

}  // namespace

Result<std::unique_ptr<ControlServer>> ControlServer::start(const ControlOptions& options,
                                                            std::shared_ptr<ControlState> state) {
  const std::string& path = options.socket_path;
  if (path.empty() || path.front() != '/' || path.size() >= sizeof(sockaddr_un::sun_path)) {
    return Error::invalid("control socket `" + path + "` must be an absolute path of at most " +
                          std::to_string(sizeof(sockaddr_un::sun_path) - 1) + " characters");
  }
  std::optional<gid_t> group;
  if (!options.group.empty()) {
    auto gid = groupId(options.group);
    if (!gid) {
      return gid.error();
    }
    group = *gid;
  }

  std::unique_ptr<ControlServer> server(new ControlServer());
  server->options_ = options;
  server->state_ = state;
  auto created = prepareDirectory(fs::path(path).parent_path(), group);
  if (!created) {
    return created.error();
  }
  server->created_directory_ = *created;
  if (auto cleared = clearStaleSocket(path); !cleared) {
    return cleared.error();
  }

  server->service_ = std::make_unique<Service>(std::move(state));
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + path, grpc::InsecureServerCredentials());
  builder.RegisterService(server->service_.get());
  builder.SetMaxReceiveMessageSize(static_cast<int>(kMaxDiffRequestBytes));
  builder.SetMaxSendMessageSize(static_cast<int>(kMaxReplyBytes));
  grpc::ResourceQuota quota("microseg-control");
  quota.SetMaxThreads(kMaxServerThreads);
  builder.SetResourceQuota(quota);
  // bind() creates the socket file with the umask's mode; 0177 makes it 0600 from the first
  // moment, before the chmod below, so nobody else can connect in between.
  // LIMITATION: the umask is process-wide; this runs at start, before the agent's other
  // threads (collector client, metrics server) exist.
  const mode_t previous_umask = umask(0177);
  server->server_ = builder.BuildAndStart();
  umask(previous_umask);
  if (server->server_ == nullptr) {
    return Error(EADDRNOTAVAIL, "cannot serve the control socket " + path +
                                    " (gRPC refused the address; see the log above)");
  }

  struct stat info {};
  if (lstat(path.c_str(), &info) != 0) {
    return Error::fromErrno(errno, "control socket " + path);
  }
  server->socket_inode_ = info.st_ino;
  if (chmod(path.c_str(), group ? 0660 : 0600) != 0) {
    return Error::fromErrno(errno, "set the mode of control socket " + path);
  }
  if (group && chown(path.c_str(), static_cast<uid_t>(-1), *group) != 0) {
    return Error::fromErrno(errno, "give control socket " + path + " to group " + options.group +
                                       " (--control-group needs CAP_CHOWN)");
  }
  if (group && !server->created_directory_) {
    warnIfGroupCannotEnter(fs::path(path).parent_path(), *group, options.group);
  }
  logger("rpc")->info("serving control socket path={} group={}", path,
                      options.group.empty() ? "(root only)" : options.group);
  return server;
}

ControlServer::~ControlServer() {
  if (state_) {
    state_->flows().close();
  }
  if (server_) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  }
  struct stat info {};
  if (socket_inode_ != 0 && lstat(options_.socket_path.c_str(), &info) == 0 &&
      info.st_ino == socket_inode_) {
    unlink(options_.socket_path.c_str());
  }
  if (created_directory_) {
    rmdir(fs::path(options_.socket_path).parent_path().c_str());
  }
}

}  // namespace mseg::agent
