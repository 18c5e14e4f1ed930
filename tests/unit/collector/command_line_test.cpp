// microseg-collector's command line: what an operator reads and the exit status.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>

#include "collector_testing.hpp"
#include "support/subprocess.hpp"

namespace mseg::collector {
namespace {

using ::testing::HasSubstr;
using testing::TempDir;

class CollectorCommandLineTest : public ::testing::Test {
protected:
  void SetUp() override { ASSERT_FALSE(dir_.path().empty()); }

  mseg::testing::CommandResult run(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {MSEG_COLLECTOR_BINARY};
    argv.insert(argv.end(), args.begin(), args.end());
    auto result = mseg::testing::runCommand(argv);
    EXPECT_TRUE(result.ok()) << result.error().message();
    return result ? *result : mseg::testing::CommandResult{-1, {}, {}};
  }

  std::string writeConfig(const std::string& text) {
    auto path = (dir_ / "collector.yaml").string();
    std::ofstream(path) << text;
    return path;
  }

  TempDir dir_;
};

TEST_F(CollectorCommandLineTest, PrintsEveryConfigurationProblemAndExitsWithTwo) {
  auto path = writeConfig("listen: 127.0.0.1:7443\noutputs: []\nverbose: true\n");

  auto result = run({"--config", path});

  EXPECT_EQ(result.status, 2);
  EXPECT_THAT(result.err, HasSubstr(path + ":1:1: error: configuration is missing required "
                                           "field `tls`"));
  EXPECT_THAT(result.err, HasSubstr(path + ":2:10: error: `outputs` must list at least one "
                                           "output"));
  EXPECT_THAT(result.err, HasSubstr(path + ":3:1: error: unknown field `verbose`"));
}

TEST_F(CollectorCommandLineTest, ChecksAValidConfigurationWithoutStarting) {
  auto path = writeConfig(
      "listen: 127.0.0.1:0\n"
      "tls: {cert: /nonexistent.crt, key: /nonexistent.key, client_ca: /nonexistent-ca.crt}\n"
      "outputs: [{type: ocsf_file, path: /nonexistent/flows.jsonl}]\n");

  auto result = run({"--config", path, "--check-config"});

  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_EQ(result.out, path + ": valid, 1 outputs\n");
}

TEST_F(CollectorCommandLineTest, ExitsWithOneWhenItCannotStart) {
  auto path = writeConfig(
      "listen: 127.0.0.1:0\n"
      "tls: {cert: /nonexistent.crt, key: /nonexistent.key, client_ca: /nonexistent-ca.crt}\n"
      "state_dir: " +
      (dir_ / "state").string() +
      "\n"
      "outputs: [{type: ocsf_file, path: " +
      (dir_ / "flows.jsonl").string() + "}]\n");

  auto result = run({"--config", path});

  EXPECT_EQ(result.status, 1);
  EXPECT_THAT(result.err, HasSubstr("cannot start: open /nonexistent.crt: No such file"));
}

TEST_F(CollectorCommandLineTest, RefusesAMissingConfigFlag) {
  auto result = run({});

  EXPECT_EQ(result.status, 2);
  EXPECT_EQ(result.err, "microseg-collector: no configuration given: pass --config FILE\n");
}

TEST_F(CollectorCommandLineTest, RefusesAnUnknownLogLevel) {
  auto result = run({"--config", "x.yaml", "--log-level", "loud"});

  EXPECT_EQ(result.status, 2);
  EXPECT_THAT(result.err,
              HasSubstr("--log-level loud: expected trace, debug, info, warn or error"));
}

}  // namespace
}  // namespace mseg::collector
