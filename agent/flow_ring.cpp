#include "flow_ring.hpp"

#include <algorithm>

namespace mseg::agent {

void FlowRing::push(FlowRecord&& record) {
  {
    std::lock_guard lock(mutex_);
    if (capacity_ == 0) {
      return;
    }
    if (records_.size() == capacity_) {
      records_.pop_front();
    }
    records_.push_back(std::move(record));
    next_position_ += 1;
  }
  grown_.notify_all();
}

std::vector<FlowRecord> FlowRing::recent(size_t count, const Filter& filter,
                                         uint64_t& position) const {
  std::vector<FlowRecord> found;
  std::lock_guard lock(mutex_);
  position = next_position_;
  for (auto it = records_.rbegin(); it != records_.rend() && found.size() < count; ++it) {
    if (filter(*it)) {
      found.push_back(*it);
    }
  }
  std::reverse(found.begin(), found.end());
  return found;
}

FlowRing::Newer FlowRing::readNewer(uint64_t& position, const Filter& filter,
                                    std::chrono::milliseconds timeout) const {
  Newer found;
  std::unique_lock lock(mutex_);
  grown_.wait_for(lock, timeout, [&] { return closed_ || next_position_ > position; });
  // Records older than the ring's oldest were dropped before this reader saw them.
  const uint64_t oldest = next_position_ - records_.size();
  found.skipped = oldest > position ? oldest - position : 0;
  for (uint64_t at = std::max(position, oldest); at < next_position_; at++) {
    const FlowRecord& record = records_[at - oldest];
    if (filter(record)) {
      found.records.push_back(record);
    }
  }
  position = next_position_;
  return found;
}

void FlowRing::close() {
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
  }
  grown_.notify_all();
}

bool FlowRing::closed() const {
  std::lock_guard lock(mutex_);
  return closed_;
}

}  // namespace mseg::agent
