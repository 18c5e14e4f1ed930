// The ocsf_file output: JSON lines, size-based rotation keeping N files, failures reported.
#include "mseg/collector/ocsf_file_output.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "collector_testing.hpp"

namespace mseg::collector {
namespace {

using testing::makeRecord;
using testing::TempDir;

std::vector<std::string> readLines(const std::filesystem::path& path) {
  std::ifstream file(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(file, line);) {
    lines.push_back(line);
  }
  return lines;
}

class OcsfFileOutputTest : public ::testing::Test {
protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    config_.name = "archive";
    config_.path = (dir_ / "logs/flows.jsonl").string();
  }

  std::unique_ptr<OcsfFileOutput> open() {
    auto output = OcsfFileOutput::open(config_);
    EXPECT_TRUE(output.ok()) << output.error().message();
    return output ? std::move(*output) : nullptr;
  }

  // Writes records `first` to `last` of host-a as one batch.
  static Status writeBatch(Output& output, uint64_t first, uint64_t last) {
    std::vector<FlowRecord> records;
    for (uint64_t sequence = first; sequence <= last; ++sequence) {
      records.push_back(makeRecord("host-a", sequence));
    }
    std::vector<const FlowRecord*> pointers;
    for (const auto& record : records) {
      pointers.push_back(&record);
    }
    return output.write(pointers);
  }

  TempDir dir_;
  OcsfFileOutputConfig config_;
};

TEST_F(OcsfFileOutputTest, WritesOneOcsfJsonObjectPerLine) {
  auto output = open();
  ASSERT_NE(output, nullptr);

  ASSERT_TRUE(writeBatch(*output, 1, 3).ok());

  auto lines = readLines(config_.path);
  ASSERT_EQ(lines.size(), 3u);
  for (const auto& line : lines) {
    auto event = nlohmann::json::parse(line, nullptr, false);
    ASSERT_FALSE(event.is_discarded()) << line;
    EXPECT_EQ(event["class_uid"], 4001) << line;
  }
  EXPECT_EQ(output->stats().records, 3u);
}

TEST_F(OcsfFileOutputTest, AppendsToTheFileAnEarlierInstanceWrote) {
  ASSERT_TRUE(writeBatch(*open(), 1, 2).ok());

  ASSERT_TRUE(writeBatch(*open(), 3, 3).ok());

  EXPECT_EQ(readLines(config_.path).size(), 3u);
}

TEST_F(OcsfFileOutputTest, RotatesBeforeABatchWouldPassMaxBytesAndKeepsTheNewestFiles) {
  config_.max_bytes = 4096;
  config_.keep = 2;
  auto output = open();
  ASSERT_NE(output, nullptr);
  ASSERT_TRUE(writeBatch(*output, 1, 1).ok());
  uint64_t line_bytes = std::filesystem::file_size(config_.path);
  uint64_t per_file = config_.max_bytes / line_bytes;

  for (uint64_t sequence = 2; sequence <= per_file * 4; ++sequence) {
    ASSERT_TRUE(writeBatch(*output, sequence, sequence).ok());
  }

  EXPECT_LE(std::filesystem::file_size(config_.path), config_.max_bytes);
  EXPECT_EQ(readLines(config_.path + ".1").size(), per_file);
  EXPECT_EQ(readLines(config_.path + ".2").size(), per_file);
  EXPECT_FALSE(std::filesystem::exists(config_.path + ".3"));
  EXPECT_EQ(output->stats().rotations, 3u);
}

TEST_F(OcsfFileOutputTest, NeverSplitsABatchAcrossFiles) {
  config_.max_bytes = 4096;
  auto output = open();
  ASSERT_NE(output, nullptr);
  ASSERT_TRUE(writeBatch(*output, 1, 1).ok());

  ASSERT_TRUE(writeBatch(*output, 2, 40).ok());

  EXPECT_EQ(readLines(config_.path + ".1").size(), 1u);
  EXPECT_EQ(readLines(config_.path).size(), 39u);
}

TEST_F(OcsfFileOutputTest, ReportsAFailedWriteAndCountsIt) {
  config_.path = "/dev/full";
  auto output = open();
  ASSERT_NE(output, nullptr);

  auto written = writeBatch(*output, 1, 1);

  ASSERT_FALSE(written.ok());
  EXPECT_EQ(written.error().code(), ENOSPC);
  EXPECT_EQ(output->stats().errors, 1u);
  EXPECT_EQ(output->stats().records, 0u);
}

}  // namespace
}  // namespace mseg::collector
