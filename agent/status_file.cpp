#include "status_file.hpp"

#include <signal.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "mseg/files.hpp"

namespace mseg::agent {

namespace fs = std::filesystem;

std::string statusFilePath(const std::string& state_dir) { return state_dir + "/status.json"; }

Status writeStatusFile(const std::string& state_dir, const StatusFile& status) {
  std::error_code err;
  fs::create_directories(state_dir, err);
  const nlohmann::json json = {
      {"pid", status.pid},
      {"state", status.state},
      {"cgroup", status.cgroup},
      {"pin_dir", status.pin_dir},
      {"policy_file", status.policy_file},
      {"policy_version", status.policy_version},
      {"policy_hash", status.policy_hash},
      {"last_error", status.last_error},
  };
  // Paths and errors may hold bytes that are not UTF-8; dump() would throw on them.
  const std::string text =
      json.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  return replaceFile(statusFilePath(state_dir), text, 0644);
}

Result<StatusFile> readStatusFile(const std::string& state_dir) {
  const std::string path = statusFilePath(state_dir);
  std::ifstream file(path);
  if (!file) {
    return Error::fromErrno(errno, "read " + path);
  }
  std::stringstream text;
  text << file.rdbuf();
  const auto json = nlohmann::json::parse(text.str(), nullptr, false);
  if (json.is_discarded() || !json.is_object() || !json.contains("pid")) {
    return Error::invalid(path + " is not a status file of microsegd");
  }
  StatusFile status;
  status.pid = json.value("pid", 0);
  status.state = json.value("state", "");
  status.cgroup = json.value("cgroup", "");
  status.pin_dir = json.value("pin_dir", "");
  status.policy_file = json.value("policy_file", "");
  status.policy_version = json.value("policy_version", uint64_t{0});
  status.policy_hash = json.value("policy_hash", "");
  status.last_error = json.value("last_error", "");
  return status;
}

bool agentRunning(pid_t pid) {
  if (pid <= 0 || (kill(pid, 0) != 0 && errno != EPERM)) {
    return false;
  }
  std::ifstream comm("/proc/" + std::to_string(pid) + "/comm");
  std::string name;
  std::getline(comm, name);
  return name.rfind("microsegd", 0) == 0;  // comm is cut at 15 characters
}

}  // namespace mseg::agent
