// The collector's loggers: `collector` for storage and outputs, `rpc` for agents' streams.
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string_view>

namespace mseg::collector {

// Sets the level of both loggers ("trace" .. "error") and the line format: with a timestamp
// on a terminal, without one under systemd (JOURNAL_STREAM set), whose journal stamps lines
// itself. Routes gRPC's own messages into `rpc`, rate-limited. Call once at start, before other
// threads log.
void setUpLogging(std::string_view level);

// The named loggers, created on first use on stderr, so library code and tests may log before
// or without setUpLogging(). Thread-safe.
std::shared_ptr<spdlog::logger> collectorLog();
std::shared_ptr<spdlog::logger> rpcLog();

}  // namespace mseg::collector
