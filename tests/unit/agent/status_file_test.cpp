// STATE_DIR/status.json: what tools read when they do not ask the agent. It is replaced whole
// or not at all, so a full disk leaves the last good file, never an empty one.
#include "status_file.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "support/file_size_limit.hpp"

namespace mseg::agent {
namespace {

namespace fs = std::filesystem;

class StatusFileTest : public ::testing::Test {
protected:
  void TearDown() override { fs::remove_all(dir_); }

  static StatusFile enforcing(uint64_t version) {
    StatusFile status;
    status.pid = getpid();
    status.state = "enforcing";
    status.policy_version = version;
    status.policy_hash = std::string(64, 'a');
    return status;
  }

  std::string dir_ = fs::temp_directory_path() / ("mseg-status-test-" + std::to_string(getpid()));
};

TEST_F(StatusFileTest, WritesWhatItReadsBack) {
  ASSERT_TRUE(writeStatusFile(dir_, enforcing(3)));

  auto read = readStatusFile(dir_);

  ASSERT_TRUE(read) << read.error().message();
  EXPECT_EQ(read->policy_version, 3u);
  EXPECT_EQ(read->state, "enforcing");
}

TEST_F(StatusFileTest, FullDiskKeepsThePreviousFileWholeAndLeavesNoTemporaryFile) {
  ASSERT_TRUE(writeStatusFile(dir_, enforcing(3)));

  Status written;
  {
    testing::FileSizeLimit full(16);
    written = writeStatusFile(dir_, enforcing(4));
  }
  auto read = readStatusFile(dir_);

  ASSERT_FALSE(written);
  EXPECT_NE(written.error().message().find(statusFilePath(dir_) + ".tmp"), std::string::npos)
      << written.error().message();
  ASSERT_TRUE(read) << read.error().message();
  EXPECT_EQ(read->policy_version, 3u);
  EXPECT_FALSE(fs::exists(statusFilePath(dir_) + ".tmp"));
  EXPECT_TRUE(writeStatusFile(dir_, enforcing(5))) << "writes again once there is space";
}

TEST_F(StatusFileTest, NamesThatAreNotUtf8DoNotStopTheWrite) {
  StatusFile status = enforcing(1);
  status.last_error = "cannot label cgroup user.slice/\xff";

  ASSERT_TRUE(writeStatusFile(dir_, status));

  EXPECT_TRUE(readStatusFile(dir_));
}

}  // namespace
}  // namespace mseg::agent
