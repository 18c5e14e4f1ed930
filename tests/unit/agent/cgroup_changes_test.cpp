// A burst of cgroup changes is reported once, with counts, when it ends; a steady churn once a
// minute.
#include <gtest/gtest.h>

#include "cgroup_changes.hpp"

namespace mseg::agent {
namespace {

using namespace std::chrono_literals;
using Clock = CgroupChangeSummary::Clock;

class CgroupChangeSummaryTest : public ::testing::Test {
protected:
  CgroupChangeSummary summary_;
  const Clock::time_point start_ = Clock::now();
};

TEST_F(CgroupChangeSummaryTest, ReportsABurstOnceWhenItHasBeenQuiet) {
  for (uint64_t i = 0; i < 500; i++) {
    summary_.record(1, 0, 3 + i, 10 + i, start_ + std::chrono::milliseconds(i / 10));
  }
  const auto last = start_ + 49ms;

  auto during = summary_.takeEnded(last + 500ms);
  auto ended = summary_.takeEnded(last + CgroupChangeSummary::kQuiet);
  auto after = summary_.takeEnded(last + 5s);

  EXPECT_FALSE(during);
  ASSERT_TRUE(ended);
  EXPECT_EQ(ended->changes, 500u);
  EXPECT_EQ(ended->bound, 500u);
  EXPECT_EQ(ended->unbound, 0u);
  EXPECT_EQ(ended->workload_cgroups, 502u);
  EXPECT_EQ(ended->first_version, 10u);
  EXPECT_EQ(ended->last_version, 509u);
  EXPECT_FALSE(after) << "reported once";
}

TEST_F(CgroupChangeSummaryTest, ReportsASteadyChurnOncePerLongestBurst) {
  unsigned reports = 0;
  for (auto at = start_; at < start_ + 150s; at += 100ms) {
    summary_.record(1, 1, 7, 1, at);
    reports += summary_.takeEnded(at) ? 1 : 0;
  }

  EXPECT_EQ(reports, 2u);  // at 60 s and at 120 s
  auto rest = summary_.take();
  ASSERT_TRUE(rest);
  EXPECT_EQ(rest->bound, rest->unbound);
}

TEST_F(CgroupChangeSummaryTest, ReportsNothingWithoutChanges) {
  EXPECT_FALSE(summary_.takeEnded(start_ + 1h));
  EXPECT_FALSE(summary_.take());
}

}  // namespace
}  // namespace mseg::agent
