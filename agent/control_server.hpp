// The agent's control API for microsegctl: a gRPC service on a local Unix socket, served from
// gRPC's own threads. The agent loop never waits for a caller: it publishes what callers may
// see into ControlState (a few pointer and counter swaps under a mutex), and calls compute
// their answers from those snapshots, e.g. a policy diff compiles on the caller's thread.
//
// Trust model: whoever can connect() to the socket may use every call, so access is decided by
// the socket file's permissions, like docker.sock or containerd.sock: owner root, mode 0600, or
// 0660 with the group given by --control-group. Calls only read state and compute; none
// changes what the agent enforces.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cgroups.hpp"
#include "control_limits.hpp"
#include "flow_ring.hpp"
#include "kernel_state.hpp"
#include "mseg/policy/compiled.hpp"
#include "mseg/result.hpp"

namespace grpc {
class Server;
}

namespace mseg::agent {

// What never changes while the agent runs.
struct AgentIdentity {
  std::string version;
  pid_t pid = 0;
  uint64_t started_unix_nano = 0;
  std::string attach_cgroup;
  std::string pin_dir;
  std::string policy_file;
  bool telemetry = true;  // false: no flow records, so `flows` has nothing to show
};

struct ExporterStats {
  std::string flow_log;   // path; empty when none
  std::string collector;  // host:port; empty when none
  bool collector_connected = false;
  uint64_t spool_records = 0;
  uint64_t spool_dropped = 0;
  uint64_t records_exported = 0;
  uint64_t records_dropped = 0;
};

// The outcome of a policy reload (SIGHUP or a change of the file).
struct ReloadOutcome {
  enum class Result : uint8_t { None, Applied, Rejected, Failed };
  Result result = Result::None;
  uint64_t time_unix_nano = 0;
  std::string error;
};

// Everything a control call reads, as of one moment.
struct ControlSnapshot {
  bool ready = false;  // false until the first policy is applied
  std::shared_ptr<const policy::CompiledPolicy> policy;
  uint64_t policy_version = 0;
  std::shared_ptr<const std::vector<WorkloadBinding>> bindings;
  std::shared_ptr<const std::vector<CgroupEntry>> cgroups;
  ExporterStats exporter;
  ReloadOutcome last_reload;
  std::string last_error;
  uint64_t last_error_unix_nano = 0;
};

// Shared between the agent loop (writer) and control calls (readers). Thread-safe; every method
// holds the lock only to copy or swap small values.
class ControlState {
public:
  explicit ControlState(AgentIdentity identity)
      : identity_(std::move(identity)), flows_(kRecentFlows) {}

  const AgentIdentity& identity() const { return identity_; }
  FlowRing& flows() { return flows_; }

  // A new policy version or a new set of cgroups.
  void publishPolicy(std::shared_ptr<const policy::CompiledPolicy> policy, uint64_t version,
                     std::vector<WorkloadBinding> bindings, std::vector<CgroupEntry> cgroups);
  void publishExporter(const ExporterStats& exporter);
  // A reload's outcome; a failed one is also the last error, an applied one clears it.
  void recordReload(ReloadOutcome::Result result, const std::string& error);
  // An error that is not a reload's (e.g. cgroups that could not be labelled).
  void recordError(const std::string& error);

  ControlSnapshot snapshot() const;

private:
  const AgentIdentity identity_;
  FlowRing flows_;
  mutable std::mutex mutex_;
  ControlSnapshot snapshot_;
};

struct ControlOptions {
  std::string socket_path;  // absolute path of the Unix socket
  std::string group;        // group allowed besides root; empty: root only
};

class ControlServer {
public:
  // Creates the socket's directory when missing (0700, or 0750 owned by the group), refuses a
  // path where another agent answers or that is not a socket, and serves on it with the socket
  // file at 0600 (0660 and the group). Fails naming the path or the group and the cause.
  static Result<std::unique_ptr<ControlServer>> start(const ControlOptions& options,
                                                      std::shared_ptr<ControlState> state);
  // Wakes followers, stops serving (calls in progress get a second to end), and removes the
  // socket and the directory it created.
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

private:
  ControlServer() = default;
  struct Service;

  ControlOptions options_;
  std::shared_ptr<ControlState> state_;
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  bool created_directory_ = false;
  ino_t socket_inode_ = 0;
};

}  // namespace mseg::agent
