// Runs the real microsegd binary for integration tests, the way an operator starts it, and
// reads what it reports.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "datapath.hpp"
#include "mseg/result.hpp"
#include "support/subprocess.hpp"

namespace mseg::testing {

// One agent's settings and files: a policy file, a state directory and a pin directory that
// belong to this test alone. The destructor stops the agent and removes every pin.
class AgentHarness {
public:
  explicit AgentHarness(std::filesystem::path attach_cgroup);
  ~AgentHarness();
  AgentHarness(const AgentHarness&) = delete;
  AgentHarness& operator=(const AgentHarness&) = delete;

  void writePolicy(const std::string& text) const;
  const std::filesystem::path& policyPath() const { return policy_path_; }
  // Starts the agent with this policy path (a policy directory, say) from now on; writePolicy
  // then writes there.
  void setPolicyPath(std::filesystem::path path) { policy_path_ = std::move(path); }
  const std::string& pinDir() const { return pin_dir_; }
  // Pins go to `pin_dir` from the next start on; the destructor uninstalls that one.
  void usePinDir(std::string pin_dir) { pin_dir_ = std::move(pin_dir); }

  // Starts microsegd and waits until it reports enforcing (status file with its pid).
  // `wrapper` runs before it on the command line, e.g. setpriv to reduce capabilities.
  Status start(const std::vector<std::string>& wrapper = {});
  // Starts microsegd without waiting; for tests of failing starts.
  Result<Subprocess> launch(const std::vector<std::string>& wrapper = {}) const;
  // SIGKILL, as a crash would.
  void crash();
  // SIGTERM, as `systemctl stop` does; returns the exit status once the agent has exited.
  Result<int> stop(std::chrono::milliseconds timeout = std::chrono::seconds(20));
  // What the agent stop() ended wrote to stderr (its log).
  const std::string& stoppedLog() const { return stopped_log_; }
  // SIGHUP, then waits until the status file shows a version above `after`.
  Status reloadAndWait(uint64_t after);
  // Sends SIGHUP without waiting.
  void reload() const;

  // Flags added to every start, e.g. {"--config", path}.
  void addArguments(const std::vector<std::string>& arguments) {
    extra_arguments_.insert(extra_arguments_.end(), arguments.begin(), arguments.end());
  }
  // Forgets the flags addArguments gave.
  void clearArguments() { extra_arguments_.clear(); }
  const std::filesystem::path& workDir() const { return work_dir_; }
  // Starts this microsegd binary from now on instead of the one built with the tests.
  void useBinary(std::string path) { binary_ = std::move(path); }
  // The agent's control socket, in the work directory: tests never use /run/microseg.
  std::string controlSocket() const { return (work_dir_ / "control.sock").string(); }

  // The OCSF flow records the agent has written to its flow log so far, one JSON text each.
  std::vector<std::string> flowLogLines() const;

  std::optional<uint64_t> policyVersion() const;
  std::string lastError() const;
  // The status file's `state`: "enforcing", or "stopped" after a clean stop.
  std::string runState() const;
  // Total hits of a rule by its "segment/rule" name, from the pinned maps.
  uint64_t ruleHits(const std::string& rule_name) const;
  Result<agent::PinnedCounters> counters() const;
  const Subprocess* process() const { return process_ ? &*process_ : nullptr; }

private:
  std::filesystem::path attach_cgroup_;
  std::filesystem::path work_dir_;
  std::filesystem::path policy_path_;
  std::string pin_dir_;
  std::optional<Subprocess> process_;
  std::vector<std::string> extra_arguments_;
  std::string stopped_log_;
  std::string binary_ = MSEG_MICROSEGD;
};

}  // namespace mseg::testing
