// The most recent flow records in memory, for `microsegctl flows`: the agent loop appends,
// control calls read and wait for new ones. Bounded, so a busy host costs a fixed amount of
// memory; what falls out of the ring is still in the flow log or the spool.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <vector>

#include "flow_recorder.hpp"

namespace mseg::agent {

class FlowRing {
public:
  using Filter = std::function<bool(const FlowRecord&)>;

  explicit FlowRing(size_t capacity) : capacity_(capacity) {}

  // Appends `record`, dropping the oldest past the capacity, and wakes waiting readers. Takes
  // the lock only to move the record in: it runs on the agent loop for every record.
  void push(FlowRecord&& record);

  // Copies of the last `count` records that pass `filter`, oldest first, and the position
  // after the newest record (whether it passed or not), for readNewer().
  std::vector<FlowRecord> recent(size_t count, const Filter& filter, uint64_t& position) const;

  struct Newer {
    std::vector<FlowRecord> records;  // oldest first
    // Records pushed after `position` that fell out of the ring before this read, counted
    // whether they would have passed the filter or not: the reader was too slow for them.
    uint64_t skipped = 0;
  };

  // Copies of the records after `position` that pass `filter`, waiting up to `timeout` for at
  // least one record to arrive; advances `position`. Returns early, possibly empty, on close().
  Newer readNewer(uint64_t& position, const Filter& filter,
                  std::chrono::milliseconds timeout) const;

  // Wakes every waiting reader for good (the agent is stopping).
  void close();
  bool closed() const;

private:
  mutable std::mutex mutex_;
  mutable std::condition_variable grown_;
  size_t capacity_;
  std::deque<FlowRecord> records_;
  uint64_t next_position_ = 0;  // position of the next record pushed; records_.back() is one less
  bool closed_ = false;
};

}  // namespace mseg::agent
