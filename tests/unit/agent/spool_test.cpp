// The spool keeps flow records for the collector across crashes, numbers them without gaps or
// reuse, and drops the oldest (counted) only when it is full.
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "spool.hpp"
#include "support/file_size_limit.hpp"

namespace mseg::agent {
namespace {

namespace fs = std::filesystem;
using microseg::telemetry::v1::FlowRecord;

class SpoolTest : public ::testing::Test {
protected:
  void SetUp() override {
    const std::string test = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    dir_ = fs::temp_directory_path() /
           ("mseg-spool-test-" + std::to_string(getpid()) + "-" + test);
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<Spool> open(uint64_t max_bytes = 1ull << 30) {
    auto spool = Spool::open(dir_.string(), max_bytes);
    EXPECT_TRUE(spool) << spool.error().message();
    return std::move(*spool);
  }

  static void appendRecords(Spool& spool, int count, size_t rule_bytes = 10) {
    for (int i = 0; i < count; i++) {
      FlowRecord record;
      record.set_rule(std::string(rule_bytes, 'r'));
      spool.append(record, "host-a");
    }
  }

  fs::path dir_;
};

TEST_F(SpoolTest, NumbersRecordsFromOneAndReadsThemBackInOrder) {
  auto spool = open();

  appendRecords(*spool, 3);
  ASSERT_TRUE(spool->sync());
  auto records = spool->read(0, 10);

  ASSERT_TRUE(records);
  ASSERT_EQ(records->size(), 3u);
  EXPECT_EQ((*records)[0].sequence(), 1u);
  EXPECT_EQ((*records)[2].sequence(), 3u);
  EXPECT_EQ((*records)[2].record_id(), "host-a-3");
}

// A write the disk cuts short must not leave half a record in the segment, where every record
// after it would read as corrupt.
TEST_F(SpoolTest, FullDiskCutsNoRecordInHalf) {
  auto spool = open();
  appendRecords(*spool, 3, 100);
  ASSERT_TRUE(spool->sync());
  uint64_t segment_size = 0;
  for (const auto& entry : fs::directory_iterator(dir_)) {
    if (entry.path().filename() != "state") {
      segment_size = std::max<uint64_t>(segment_size, fs::file_size(entry.path()));
    }
  }

  appendRecords(*spool, 3, 100);
  Status full;
  {
    testing::FileSizeLimit limit(segment_size + 50);  // room for part of the next record only
    full = spool->sync();
  }
  auto synced = spool->sync();
  auto records = spool->read(0, 10);

  EXPECT_FALSE(full);
  EXPECT_TRUE(synced) << synced.error().message();
  ASSERT_TRUE(records) << records.error().message();
  ASSERT_EQ(records->size(), 6u);
  EXPECT_EQ((*records)[5].sequence(), 6u);
}

TEST_F(SpoolTest, ReadsOnlySyncedRecords) {
  auto spool = open();

  appendRecords(*spool, 2);

  EXPECT_TRUE(spool->read(0, 10)->empty());
}

TEST_F(SpoolTest, ReadsAfterAGivenSequenceUpToALimit) {
  auto spool = open();
  appendRecords(*spool, 10);
  ASSERT_TRUE(spool->sync());

  auto records = spool->read(4, 3);

  ASSERT_EQ(records->size(), 3u);
  EXPECT_EQ((*records)[0].sequence(), 5u);
}

TEST_F(SpoolTest, AcknowledgedRecordsAreForgottenAcrossRestart) {
  {
    auto spool = open();
    appendRecords(*spool, 5);
    ASSERT_TRUE(spool->sync());
    ASSERT_TRUE(spool->acknowledge(3));
  }

  auto reopened = open();

  EXPECT_EQ(reopened->acknowledged(), 3u);
  EXPECT_EQ(reopened->nextSequence(), 6u);
  auto records = reopened->read(reopened->acknowledged(), 10);
  ASSERT_EQ(records->size(), 2u);
  EXPECT_EQ((*records)[0].sequence(), 4u);
}

TEST_F(SpoolTest, RestartContinuesNumberingAfterEverySyncedRecord) {
  {
    auto spool = open();
    appendRecords(*spool, 4);
    ASSERT_TRUE(spool->sync());
    ASSERT_TRUE(spool->acknowledge(4));
  }

  auto reopened = open();
  appendRecords(*reopened, 1);
  ASSERT_TRUE(reopened->sync());

  EXPECT_EQ(reopened->read(4, 10)->at(0).sequence(), 5u);
}

TEST_F(SpoolTest, TornFrameAfterCrashIsCutOff) {
  {
    auto spool = open();
    appendRecords(*spool, 2);
    ASSERT_TRUE(spool->sync());
  }
  for (const auto& entry : fs::directory_iterator(dir_)) {
    if (entry.path().extension() == ".seg") {
      std::ofstream(entry.path(), std::ios::app | std::ios::binary) << std::string("\x30\0\0", 3);
    }
  }

  auto reopened = open();
  appendRecords(*reopened, 1);
  ASSERT_TRUE(reopened->sync());

  auto records = reopened->read(0, 10);
  ASSERT_TRUE(records) << records.error().message();
  ASSERT_EQ(records->size(), 3u);
  EXPECT_EQ((*records)[2].sequence(), 3u);
}

TEST_F(SpoolTest, FullSpoolDropsOldestSegmentAndCountsIt) {
  auto spool = open(6ull << 20);

  // About 12 MB in 1 KB records: three 4 MB segments, so the oldest must go.
  for (int batch = 0; batch < 12; batch++) {
    appendRecords(*spool, 1000, 1000);
    ASSERT_TRUE(spool->sync());
  }

  EXPECT_GT(spool->droppedTotal(), 0u);
  EXPECT_EQ(spool->acknowledged(), spool->droppedTotal());
  auto records = spool->read(spool->acknowledged(), 1);
  ASSERT_EQ(records->size(), 1u);
  EXPECT_EQ((*records)[0].sequence(), spool->droppedTotal() + 1);
  EXPECT_EQ(spool->pendingRecords(), 12000u - spool->droppedTotal());
}

}  // namespace
}  // namespace mseg::agent
