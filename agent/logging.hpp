// Named spdlog loggers, one per module, and the hook that routes libbpf's messages into the
// `bpf` logger.
#pragma once

#include <chrono>
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

// When to log a problem that may come back at every event (a full disk at every write): its
// first occurrence at once, then at most once per `interval` while it lasts, so the log shows
// it goes on without a line per event. Not thread-safe: one per problem, used by one thread.
class RepeatedProblem {
public:
  using Clock = std::chrono::steady_clock;
  explicit RepeatedProblem(Clock::duration interval) : interval_(interval) {}

  // The problem happened at `now`: whether to log it this time.
  bool due(Clock::time_point now);
  // It did not happen this time: true once, when it had been logged, so its end is logged too.
  bool ended();

private:
  Clock::duration interval_;
  bool logged_ = false;
  Clock::time_point logged_at_;
};

}  // namespace mseg::agent
