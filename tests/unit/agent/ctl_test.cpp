// microsegctl as CI pipelines and operators call it: exit codes and what it prints.
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "support/subprocess.hpp"

namespace mseg::agent {
namespace {

using mseg::testing::runCommand;

class MicrosegctlTest : public ::testing::Test {
protected:
  void TearDown() override { std::filesystem::remove(policy_); }

  std::string writePolicy(const std::string& text) {
    std::ofstream(policy_) << text;
    return policy_;
  }

  std::string policy_ = "/tmp/mseg-ctl-test-" + std::to_string(getpid()) + ".yaml";
};

TEST_F(MicrosegctlTest, ValidPolicyExitsZeroWithASummary) {
  auto run = runCommand({MSEG_MICROSEGCTL, "policy", "validate", MSEG_EXAMPLE_POLICY});

  ASSERT_TRUE(run);
  EXPECT_EQ(run->status, 0) << run->err;
  EXPECT_NE(run->out.find("valid: 4 workloads, 7 inventory entries, 10 rules"), std::string::npos)
      << run->out;
}

TEST_F(MicrosegctlTest, InvalidPolicyExitsOneNamingLineAndColumn) {
  auto path = writePolicy("version: 1\nsegments:\n  - name: s\n    mode: enforcing\n");

  auto run = runCommand({MSEG_MICROSEGCTL, "policy", "validate", path});

  ASSERT_TRUE(run);
  EXPECT_EQ(run->status, 1);
  EXPECT_NE(run->err.find(path + ":4:11: error:"), std::string::npos) << run->err;
}

TEST_F(MicrosegctlTest, MissingFileExitsOneWithTheCause) {
  auto run = runCommand({MSEG_MICROSEGCTL, "policy", "validate", "/nonexistent/p.yaml"});

  ASSERT_TRUE(run);
  EXPECT_EQ(run->status, 1);
  EXPECT_NE(run->err.find("No such file or directory"), std::string::npos) << run->err;
}

TEST_F(MicrosegctlTest, MalformedCommandLinesExitTwoWithUsage) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"policy", "validate"}, {"counters", "--pin-dir"}, {"uninstall", "extra"}, {"nope"}}) {
    std::vector<std::string> argv = {MSEG_MICROSEGCTL};
    argv.insert(argv.end(), args.begin(), args.end());

    auto run = runCommand(argv);

    ASSERT_TRUE(run);
    EXPECT_EQ(run->status, 2) << args[0];
    EXPECT_FALSE(run->err.empty()) << args[0];
  }
}

// Package removal runs `uninstall --config /etc/microseg/microsegd.yaml`, so a pin_dir an
// operator configured is the one removed.
TEST_F(MicrosegctlTest, UninstallWithConfigUsesItsPinDir) {
  const std::string pin_dir = "/tmp/mseg-ctl-test-pins-" + std::to_string(getpid());
  auto config = writePolicy("policy: /etc/microseg/policy.yaml\npin_dir: " + pin_dir + "\n");

  auto run = runCommand({MSEG_MICROSEGCTL, "uninstall", "--config", config});

  ASSERT_TRUE(run);
  EXPECT_EQ(run->status, 0) << run->err;
  EXPECT_EQ(run->out, "nothing is pinned at " + pin_dir + "\n");
}

TEST_F(MicrosegctlTest, UninstallWithBadConfigNamesThePlaceAndRemovesNothing) {
  auto config = writePolicy("pin_dir: /sys/fs/bpf/x\npin_dri: /sys/fs/bpf/y\n");

  auto run = runCommand({MSEG_MICROSEGCTL, "uninstall", "--config", config});

  ASSERT_TRUE(run);
  EXPECT_EQ(run->status, 2);
  EXPECT_NE(run->err.find(config + ":2:1: error:"), std::string::npos) << run->err;
}

}  // namespace
}  // namespace mseg::agent
