// Whole maps read in batches (agent/map_batch.hpp), as `microsegctl status` and `counters` read
// the rule counters and names: every entry once, across batch boundaries, summed over CPUs.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <cstring>
#include <map>
#include <vector>

#include <gtest/gtest.h>

#include "map_batch.hpp"
#include "mseg/unique_fd.hpp"

namespace mseg::agent {
namespace {

// More entries than three batches hold, so the reads continue from a token twice.
constexpr uint32_t kEntries = 3 * kLookupBatchEntries + 17;

class MapBatchPrivilegedTest : public ::testing::Test {
protected:
  static UniqueFd createMap(bpf_map_type type, uint32_t value_size) {
    UniqueFd fd(bpf_map_create(type, "mseg_test_batch", sizeof(uint32_t), value_size, kEntries,
                               nullptr));
    EXPECT_TRUE(fd) << "bpf_map_create: " << std::strerror(errno);
    return fd;
  }

  const int cpus_ = libbpf_num_possible_cpus();
};

TEST_F(MapBatchPrivilegedTest, SumsPerCpuCountersAcrossBatchBoundaries) {
  UniqueFd counters = createMap(BPF_MAP_TYPE_PERCPU_ARRAY, sizeof(uint64_t));
  ASSERT_TRUE(counters);
  const std::vector<uint32_t> keys = {0, 1, kLookupBatchEntries - 1, kLookupBatchEntries,
                                      2 * kLookupBatchEntries + 5, kEntries - 1};
  for (uint32_t key : keys) {
    std::vector<uint64_t> per_cpu(cpus_);
    for (int cpu = 0; cpu < cpus_; cpu++) {
      per_cpu[cpu] = key + 1 + cpu * 1000ull;
    }
    ASSERT_EQ(bpf_map_update_elem(counters.get(), &key, per_cpu.data(), BPF_ANY), 0);
  }

  auto totals = sumPerCpuCounters(counters.get(), kEntries - 1);

  ASSERT_TRUE(totals) << totals.error().message();
  ASSERT_EQ(totals->size(), kEntries);
  uint64_t all = 0;
  for (uint32_t key = 0; key < kEntries; key++) {
    all += (*totals)[key];
  }
  uint64_t expected_all = 0;
  for (uint32_t key : keys) {
    const uint64_t expected = cpus_ * (key + 1ull) + 1000ull * cpus_ * (cpus_ - 1) / 2;
    EXPECT_EQ((*totals)[key], expected) << "key " << key;
    expected_all += expected;
  }
  EXPECT_EQ(all, expected_all) << "no counts at keys that were not written";
}

TEST_F(MapBatchPrivilegedTest, StopsReadingAfterTheLastKeyAsked) {
  UniqueFd counters = createMap(BPF_MAP_TYPE_PERCPU_ARRAY, sizeof(uint64_t));
  ASSERT_TRUE(counters);
  const uint32_t beyond = kLookupBatchEntries + 1;
  std::vector<uint64_t> per_cpu(cpus_, 7);
  ASSERT_EQ(bpf_map_update_elem(counters.get(), &beyond, per_cpu.data(), BPF_ANY), 0);

  auto totals = sumPerCpuCounters(counters.get(), 10);

  ASSERT_TRUE(totals) << totals.error().message();
  EXPECT_EQ(totals->size(), 11u);
}

TEST_F(MapBatchPrivilegedTest, VisitsEveryEntryOfAHashMapOnce) {
  UniqueFd names = createMap(BPF_MAP_TYPE_HASH, sizeof(uint64_t));
  ASSERT_TRUE(names);
  for (uint32_t key = 0; key < kEntries; key++) {
    const uint64_t value = key * 3ull;
    ASSERT_EQ(bpf_map_update_elem(names.get(), &key, &value, BPF_NOEXIST), 0);
  }

  std::map<uint32_t, uint64_t> seen;
  size_t visits = 0;
  auto read = lookupBatched<uint32_t>(names.get(), sizeof(uint64_t),
                                      [&](const uint32_t& key, const uint8_t* value) {
                                        std::memcpy(&seen[key], value, sizeof(uint64_t));
                                        visits += 1;
                                        return true;
                                      });

  ASSERT_TRUE(read) << read.error().message();
  EXPECT_EQ(visits, kEntries);
  ASSERT_EQ(seen.size(), kEntries);
  for (const auto& [key, value] : seen) {
    EXPECT_EQ(value, key * 3ull);
  }
}

}  // namespace
}  // namespace mseg::agent
