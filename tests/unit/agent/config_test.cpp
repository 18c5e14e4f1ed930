// microsegd's settings: defaults, a YAML file, flags that override it, and errors that name
// the flag or the file:line:column.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <vector>

#include <gtest/gtest.h>

#include "config.hpp"

namespace mseg::agent {
namespace {

class ConfigTest : public ::testing::Test {
protected:
  void TearDown() override { std::filesystem::remove(path_); }

  Result<CommandLine> parse(std::vector<std::string> args) {
    args.insert(args.begin(), "microsegd");
    std::vector<char*> argv;
    for (auto& arg : args) {
      argv.push_back(arg.data());
    }
    return parseCommandLine(static_cast<int>(argv.size()), argv.data());
  }

  std::string writeConfig(const std::string& text) {
    std::ofstream(path_) << text;
    return path_;
  }

  std::string path_ = "/tmp/mseg-config-test-" + std::to_string(getpid()) + ".yaml";
};

TEST_F(ConfigTest, FlagsOverrideTheConfigFile) {
  auto config = writeConfig("policy: /etc/a.yaml\npin_dir: /sys/fs/bpf/x\nstats_interval: 5\n");

  auto command = parse({"--config", config, "--policy", "/etc/b.yaml"});

  ASSERT_TRUE(command) << command.error().message();
  EXPECT_EQ(command->config.policy_path, "/etc/b.yaml");
  EXPECT_EQ(command->config.pin_dir, "/sys/fs/bpf/x");
  EXPECT_EQ(command->config.stats_interval_s, 5u);
}

TEST_F(ConfigTest, NegativeNumberIsCalledNegativeNotAString) {
  auto config = writeConfig("policy: /etc/a.yaml\nstats_interval: -5\n");

  auto command = parse({"--config", config});

  ASSERT_FALSE(command);
  EXPECT_NE(command.error().message().find(config + ":2:17: error: `stats_interval` must be "
                                           "between 0 and 86400, found -5: negative numbers "
                                           "are not allowed"),
            std::string::npos)
      << command.error().message();
  EXPECT_EQ(command.error().message().find("string"), std::string::npos)
      << command.error().message();
}

TEST_F(ConfigTest, ConfigPathThatIsADirectoryIsRefused) {
  // Read as an empty file, a directory would start the agent on defaults.
  auto command = parse({"--config", "/tmp", "--policy", "/etc/b.yaml"});

  ASSERT_FALSE(command);
  EXPECT_NE(command.error().message().find("/tmp is not a regular file"), std::string::npos)
      << command.error().message();
}

TEST_F(ConfigTest, UnknownKeyInConfigFileNamesLineAndColumn) {
  auto config = writeConfig("policy: /etc/a.yaml\npin_dri: /x\n");

  auto command = parse({"--config", config});

  ASSERT_FALSE(command);
  EXPECT_NE(command.error().message().find(config + ":2:1:"), std::string::npos)
      << command.error().message();
}

TEST_F(ConfigTest, MissingPolicyIsAnError) {
  auto command = parse({});

  ASSERT_FALSE(command);
  EXPECT_NE(command.error().message().find("no policy given"), std::string::npos);
}

TEST_F(ConfigTest, BadFlagValueNamesTheFlag) {
  auto command = parse({"--policy", "p.yaml", "--log-level", "loud"});

  ASSERT_FALSE(command);
  EXPECT_NE(command.error().message().find("--log-level loud"), std::string::npos);
}

TEST_F(ConfigTest, CollectorWithoutCredentialsIsRefused) {
  auto command = parse({"--policy", "p.yaml", "--collector", "198.18.0.5:7443"});

  ASSERT_FALSE(command);
  EXPECT_NE(command.error().message().find("--tls-cert"), std::string::npos);
}

TEST_F(ConfigTest, TelemetryIsOnUnlessTurnedOff) {
  auto config = writeConfig("policy: /etc/a.yaml\ntelemetry: off\n");

  auto by_default = parse({"--policy", "p.yaml"});
  auto from_file = parse({"--config", config});
  auto flag_over_file = parse({"--config", config, "--telemetry", "on"});

  ASSERT_TRUE(by_default && from_file && flag_over_file);
  EXPECT_TRUE(by_default->config.telemetry);
  EXPECT_FALSE(from_file->config.telemetry);
  EXPECT_TRUE(flag_over_file->config.telemetry);
}

TEST_F(ConfigTest, TelemetryValueMustBeOnOrOff) {
  auto config = writeConfig("policy: /etc/a.yaml\ntelemetry: maybe\n");

  auto flag = parse({"--policy", "p.yaml", "--telemetry", "no"});
  auto file = parse({"--config", config});

  ASSERT_FALSE(flag);
  EXPECT_NE(flag.error().message().find("--telemetry no: expected on or off"), std::string::npos)
      << flag.error().message();
  ASSERT_FALSE(file);
  EXPECT_NE(file.error().message().find(config + ":2:"), std::string::npos)
      << file.error().message();
}

TEST_F(ConfigTest, TelemetryOffWithAFlowDestinationIsRefused) {
  auto command = parse({"--policy", "p.yaml", "--telemetry", "off", "--flow-log", "/tmp/f"});

  ASSERT_FALSE(command);
  EXPECT_NE(command.error().message().find("telemetry is off"), std::string::npos)
      << command.error().message();
}

}  // namespace
}  // namespace mseg::agent
