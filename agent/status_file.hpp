// STATE_DIR/status.json: what the agent enforces, for operators and tools that read a file
// rather than ask the control socket. The agent rewrites it whenever the policy version changes
// (a reload, or a cgroup that a glob selects coming or going) and when it stops; a killed agent
// cannot, so readers check that its pid still runs (agentRunning).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "mseg/result.hpp"

namespace mseg::agent {

struct StatusFile {
  pid_t pid = 0;
  std::string state;  // "enforcing" while the agent runs, "stopped" after a clean stop
  std::string cgroup;
  std::string pin_dir;
  std::string policy_file;
  uint64_t policy_version = 0;
  std::string policy_hash;
  std::string last_error;
};

// The path of the file in `state_dir`.
std::string statusFilePath(const std::string& state_dir);

// Writes the file atomically (replaceFile): readers never see half of it, and a failure (a full
// disk) leaves the previous file as it was and fails naming the step. Creates `state_dir` when
// missing.
Status writeStatusFile(const std::string& state_dir, const StatusFile& status);

// Reads the file; fails naming it when it is missing or not what the agent writes.
Result<StatusFile> readStatusFile(const std::string& state_dir);

// Whether `pid` is a running microsegd, rather than no process or one that got the pid later.
bool agentRunning(pid_t pid);

}  // namespace mseg::agent
