// How microsegd's log lines look to the journal and to a terminal. The agent is started with a
// policy it refuses, so it logs at several levels and exits before touching the kernel.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "support/subprocess.hpp"

namespace mseg::agent {
namespace {

using mseg::testing::runCommand;

class AgentLogTest : public ::testing::Test {
protected:
  void SetUp() override {
    std::ofstream(policy_) << "version: 1\nsegments:\n  - name: s\n    mode: enforcing\n";
    std::ofstream(log_).flush();
  }
  void TearDown() override {
    std::filesystem::remove(policy_);
    std::filesystem::remove(log_);
  }

  // Runs the agent with stderr going to log_ and JOURNAL_STREAM set to `journal_stream`
  // ("" for the log file's own device:inode, as systemd would set it); returns what it logged.
  std::string runAgent(std::string journal_stream) {
    if (journal_stream.empty()) {
      struct stat info {};
      EXPECT_EQ(stat(log_.c_str(), &info), 0);
      journal_stream = std::to_string(info.st_dev) + ":" + std::to_string(info.st_ino);
    }
    auto run = runCommand({"/bin/sh", "-c",
                           "JOURNAL_STREAM=" + journal_stream + " exec " + MSEG_MICROSEGD +
                               " --policy " + policy_ + " 2>>" + log_});
    EXPECT_TRUE(run);
    EXPECT_EQ(run->status, 1) << "a refused policy must stop the agent";
    std::stringstream text;
    text << std::ifstream(log_).rdbuf();
    return text.str();
  }

  std::string policy_ = "/tmp/mseg-log-test-" + std::to_string(getpid()) + ".yaml";
  std::string log_ = "/tmp/mseg-log-test-" + std::to_string(getpid()) + ".log";
};

TEST_F(AgentLogTest, JournalLinesCarryTheirPriorityAndNoTimestamp) {
  auto text = runAgent("");

  EXPECT_EQ(text.rfind("<6>agent: starting version=", 0), 0u) << text;
  EXPECT_NE(text.find("\n<3>policy: " + policy_ + ":4:11: error: invalid mode `enforcing`"),
            std::string::npos)
      << text;
  EXPECT_FALSE(std::regex_search(text, std::regex(R"(\d{4}-\d\d-\d\dT\d\d:)")))
      << "the journal adds its own timestamps: " << text;
}

TEST_F(AgentLogTest, AnInheritedJournalStreamOfAnotherFileIsIgnored) {
  // stderr was redirected after systemd set the variable: a terminal-style line, timestamped.
  auto text = runAgent("1:2");

  EXPECT_EQ(text.find("<6>"), std::string::npos) << text;
  EXPECT_NE(text.find(" info agent: starting version="), std::string::npos) << text;
  EXPECT_NE(text.find(" error policy: "), std::string::npos) << text;
}

}  // namespace
}  // namespace mseg::agent
