// Named spdlog loggers, one per module, and the hook that routes libbpf's messages into the
// `bpf` logger.
#pragma once

#include <memory>
#include <string_view>

#include <spdlog/spdlog.h>

namespace mseg::agent {

// Creates the agent's loggers (agent, bpf, policy, rpc) on stderr at `level` ("info", "debug",
// ...). Under systemd (JOURNAL_STREAM set) lines carry a syslog priority prefix and no
// timestamp, so the journal records levels and does not repeat the time. Call once at start.
void setUpLogging(std::string_view level);

// Returns the named logger, creating it with the common sinks if it does not exist yet.
std::shared_ptr<spdlog::logger> logger(const char* name);

}  // namespace mseg::agent
