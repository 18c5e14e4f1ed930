#include "cgroup_changes.hpp"

#include <utility>

namespace mseg::agent {

void CgroupChangeSummary::record(size_t bound, size_t unbound, size_t workload_cgroups,
                                 uint64_t version, Clock::time_point now) {
  if (!burst_) {
    burst_.emplace();
    burst_->first_version = version;
    started_ = now;
  }
  burst_->changes += 1;
  burst_->bound += bound;
  burst_->unbound += unbound;
  burst_->workload_cgroups = workload_cgroups;
  burst_->last_version = version;
  last_change_ = now;
}

std::optional<CgroupChangeSummary::Burst> CgroupChangeSummary::takeEnded(Clock::time_point now) {
  if (!burst_ || (now - last_change_ < kQuiet && now - started_ < kLongest)) {
    return std::nullopt;
  }
  return take();
}

std::optional<CgroupChangeSummary::Burst> CgroupChangeSummary::take() {
  return std::exchange(burst_, std::nullopt);
}

}  // namespace mseg::agent
