// Waiting for a condition without fixed sleeps: tests poll with a deadline.
#pragma once

#include <algorithm>
#include <chrono>
#include <thread>

namespace mseg::testing {

// Calls `done` until it returns true or `deadline` passes, pausing `interval` between calls.
// Returns whether `done` returned true; `done` is called at least once.
template <typename Predicate>
bool pollUntil(std::chrono::steady_clock::time_point deadline, Predicate&& done,
               std::chrono::milliseconds interval = std::chrono::milliseconds(10)) {
  while (true) {
    if (done()) {
      return true;
    }
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      return false;
    }
    std::this_thread::sleep_for(
        std::min<std::chrono::steady_clock::duration>(interval, deadline - now));
  }
}

// pollUntil with a deadline `timeout` from now.
template <typename Predicate>
bool pollUntil(std::chrono::milliseconds timeout, Predicate&& done,
               std::chrono::milliseconds interval = std::chrono::milliseconds(10)) {
  return pollUntil(std::chrono::steady_clock::now() + timeout, std::forward<Predicate>(done),
                   interval);
}

}  // namespace mseg::testing
