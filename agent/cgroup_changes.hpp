// Sums up cgroup changes for the log. Hosts start and stop services in bursts (hundreds at
// boot or at a deployment): the agent applies every change at once, but says so at info once
// per burst, with counts, and per change only at debug.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>

namespace mseg::agent {

// Not thread-safe; owned by the agent's event loop.
class CgroupChangeSummary {
public:
  using Clock = std::chrono::steady_clock;
  // A burst ends after this long without a change...
  static constexpr auto kQuiet = std::chrono::seconds(1);
  // ...or, while cgroups keep changing, after this long, so a steady churn is still reported.
  static constexpr auto kLongest = std::chrono::seconds(60);

  struct Burst {
    unsigned changes = 0;         // binding changes applied, one policy version each
    size_t bound = 0;             // cgroups that became a workload's
    size_t unbound = 0;           // cgroups that stopped being one (removed, mostly)
    size_t workload_cgroups = 0;  // cgroups bound after the last change
    uint64_t first_version = 0;
    uint64_t last_version = 0;
  };

  // Counts one change of the bindings, applied as policy version `version`.
  void record(size_t bound, size_t unbound, size_t workload_cgroups, uint64_t version,
              Clock::time_point now);

  // The burst going on, when it has ended by `now` (quiet for kQuiet, or kLongest old); then
  // starts counting afresh. nullopt while it goes on or when nothing changed.
  std::optional<Burst> takeEnded(Clock::time_point now);

  // The burst going on, ended or not (at stop); nullopt when nothing changed.
  std::optional<Burst> take();

private:
  std::optional<Burst> burst_;
  Clock::time_point started_{};
  Clock::time_point last_change_{};
};

}  // namespace mseg::agent
