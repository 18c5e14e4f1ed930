#include "agent_harness.hpp"

#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "support/netns.hpp"
#include "support/poll.hpp"

namespace mseg::testing {
namespace fs = std::filesystem;

namespace {

constexpr auto kStartTimeout = std::chrono::seconds(20);

std::optional<nlohmann::json> readStatus(const fs::path& state_dir) {
  std::ifstream file(state_dir / "status.json");
  if (!file) {
    return std::nullopt;
  }
  std::stringstream text;
  text << file.rdbuf();
  auto status = nlohmann::json::parse(text.str(), nullptr, false);
  if (status.is_discarded()) {
    return std::nullopt;
  }
  return status;
}

}  // namespace

AgentHarness::AgentHarness(fs::path attach_cgroup) : attach_cgroup_(std::move(attach_cgroup)) {
  const std::string name = uniqueName();
  work_dir_ = fs::temp_directory_path() / name;
  fs::create_directories(work_dir_);
  policy_path_ = work_dir_ / "policy.yaml";
  pin_dir_ = "/sys/fs/bpf/" + name;
}

AgentHarness::~AgentHarness() {
  if (process_) {
    process_->kill();
  }
  (void)agent::uninstallDatapath(pin_dir_);
  std::error_code err;
  fs::remove_all(work_dir_, err);
}

void AgentHarness::writePolicy(const std::string& text) const {
  std::ofstream(policy_path_, std::ios::trunc) << text;
}

Result<Subprocess> AgentHarness::launch(const std::vector<std::string>& wrapper) const {
  std::vector<std::string> argv = wrapper;
  argv.insert(argv.end(), {binary_, "--policy", policy_path_.string(), "--cgroup",
                           attach_cgroup_.string(), "--pin-dir", pin_dir_, "--state-dir",
                           (work_dir_ / "state").string(), "--stats-interval", "0",
                           "--control-socket", controlSocket()});
  argv.insert(argv.end(), extra_arguments_.begin(), extra_arguments_.end());
  return Subprocess::start(argv);
}

Status AgentHarness::start(const std::vector<std::string>& wrapper) {
  std::error_code err;
  fs::remove(work_dir_ / "state" / "status.json", err);
  auto started = launch(wrapper);
  if (!started) {
    return started.error();
  }
  process_.emplace(std::move(*started));
  const pid_t pid = process_->pid();
  bool ready = pollUntil(kStartTimeout, [&] {
    auto status = readStatus(work_dir_ / "state");
    return (status && (*status)["pid"] == pid) || !process_->running() ||
           process_->wait(std::chrono::milliseconds(0)).ok();
  });
  auto status = readStatus(work_dir_ / "state");
  if (!ready || !status || (*status)["pid"] != pid) {
    return Error(EIO, "microsegd did not start: " + process_->err());
  }
  return {};
}

void AgentHarness::crash() {
  if (process_) {
    process_->kill();
    process_.reset();
  }
}

Result<int> AgentHarness::stop(std::chrono::milliseconds timeout) {
  if (!process_) {
    return Error(ESRCH, "microsegd is not running");
  }
  ::kill(process_->pid(), SIGTERM);
  auto status = process_->wait(timeout);
  if (status) {
    stopped_log_ = process_->err();
    process_.reset();
  }
  return status;
}

void AgentHarness::reload() const {
  if (process_) {
    ::kill(process_->pid(), SIGHUP);
  }
}

Status AgentHarness::reloadAndWait(uint64_t after) {
  reload();
  bool applied = pollUntil(kStartTimeout, [&] { return policyVersion().value_or(0) > after; });
  return applied ? Status{} : Status(Error(ETIMEDOUT, "policy not reloaded: " + lastError()));
}

// Complete lines only: the agent may be appending while we read, and a reader of a growing
// log sees a last line without its newline until the write is done.
std::vector<std::string> AgentHarness::flowLogLines() const {
  std::vector<std::string> lines;
  std::ifstream file(work_dir_ / "state" / "flows.ocsf.jsonl");
  for (std::string line; std::getline(file, line);) {
    if (file.eof()) {
      break;  // getline hit the end before a newline: a line still being written
    }
    lines.push_back(line);
  }
  return lines;
}

std::optional<uint64_t> AgentHarness::policyVersion() const {
  auto status = readStatus(work_dir_ / "state");
  if (!status) {
    return std::nullopt;
  }
  return (*status)["policy_version"].get<uint64_t>();
}

std::string AgentHarness::lastError() const {
  auto status = readStatus(work_dir_ / "state");
  return status ? (*status)["last_error"].get<std::string>() : "";
}

std::string AgentHarness::runState() const {
  auto status = readStatus(work_dir_ / "state");
  return status ? (*status)["state"].get<std::string>() : "";
}

Result<agent::PinnedCounters> AgentHarness::counters() const {
  return agent::readPinnedCounters(pin_dir_);
}

uint64_t AgentHarness::ruleHits(const std::string& rule_name) const {
  auto counters = agent::readPinnedCounters(pin_dir_);
  if (!counters) {
    return 0;
  }
  for (const auto& [id, rule] : counters->rule_names) {
    if (rule.name == rule_name) {
      auto hits = counters->rule_hits.find(id);
      return hits == counters->rule_hits.end() ? 0 : hits->second;
    }
  }
  return 0;
}

}  // namespace mseg::testing
