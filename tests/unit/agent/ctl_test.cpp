// microsegctl as CI pipelines and operators call it: exit codes and what it prints.
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

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

TEST_F(MicrosegctlTest, PolicyThatIsNotARegularFileIsRefusedWithoutReadingIt) {
  // A pipe must not block and a device must not be read until memory runs out.
  const std::string fifo = policy_ + ".fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  for (const std::string& path : {fifo, std::string("/dev/zero")}) {
    auto run = runCommand({MSEG_MICROSEGCTL, "policy", "validate", path});

    ASSERT_TRUE(run) << path;
    EXPECT_EQ(run->status, 1) << path;
    EXPECT_NE(run->err.find(path + " is not a regular file"), std::string::npos) << run->err;
  }
  std::filesystem::remove(fifo);
}

TEST_F(MicrosegctlTest, ValidatesAPolicyDirectoryNamingTheFileOfEachProblem) {
  const std::string dir = policy_ + ".d";
  std::filesystem::create_directory(dir);
  std::ofstream(dir + "/10-workloads.yaml")
      << "version: 1\nworkloads:\n  - {name: web, cgroup: web.service, labels: {tier: web}}\n";
  std::ofstream(dir + "/20-rules.yaml")
      << "version: 1\nsegments:\n  - name: s\n    rules:\n"
         "      - {name: out, from: {tier: web}, to: world, protocol: tcp, ports: [443]}\n";
  std::ofstream(dir + "/20-rules.yaml~") << "not: [a policy\n";

  auto valid = runCommand({MSEG_MICROSEGCTL, "policy", "validate", dir});
  std::ofstream(dir + "/30-bad.yaml")
      << "version: 1\nsegments:\n  - name: t\n    rules:\n"
         "      - {name: typo, from: {tierr: web}, to: any}\n";
  auto invalid = runCommand({MSEG_MICROSEGCTL, "policy", "validate", dir});
  std::filesystem::remove_all(dir);

  ASSERT_TRUE(valid);
  EXPECT_EQ(valid->status, 0) << valid->err;
  EXPECT_EQ(valid->out,
            dir + ": valid: 1 workloads, 0 inventory entries, 1 rules, 1 verdict entries\n");
  ASSERT_TRUE(invalid);
  EXPECT_EQ(invalid->status, 1);
  EXPECT_EQ(invalid->err, dir + "/30-bad.yaml:5:29: error: label key `tierr` is defined by no "
                                "workload or inventory entry; the selector can never match\n"
                                "invalid policy: " + dir + ": 1 error\n");
}

TEST_F(MicrosegctlTest, PolicyDirectoryWithoutPolicyFilesIsRefusedSayingWhy) {
  const std::string dir = policy_ + ".d";
  std::filesystem::create_directory(dir);

  auto run = runCommand({MSEG_MICROSEGCTL, "policy", "validate", dir});
  std::filesystem::remove_all(dir);

  ASSERT_TRUE(run);
  EXPECT_EQ(run->status, 1);
  EXPECT_NE(run->err.find(dir + " holds no policy file (*.yaml or *.yml); an empty policy would "
                                "drop every rule"),
            std::string::npos)
      << run->err;
}

TEST_F(MicrosegctlTest, OverlongNameIsAnErrorAtItsPlace) {
  auto path = writePolicy("version: 1\nworkloads:\n  - name: " + std::string(60, 'w') +
                          "\n    cgroup: a.service\n");

  auto run = runCommand({MSEG_MICROSEGCTL, "policy", "validate", path});

  ASSERT_TRUE(run);
  EXPECT_EQ(run->status, 1);
  EXPECT_NE(run->err.find(path + ":3:11: error: workload name `wwwwwwwwwwwwwwwwwwww...` is 60 "
                                 "characters long; at most 59 are allowed"),
            std::string::npos)
      << run->err;
}

TEST_F(MicrosegctlTest, MissingFileExitsOneWithTheCause) {
  auto run = runCommand({MSEG_MICROSEGCTL, "policy", "validate", "/nonexistent/p.yaml"});

  ASSERT_TRUE(run);
  EXPECT_EQ(run->status, 1);
  EXPECT_NE(run->err.find("No such file or directory"), std::string::npos) << run->err;
}

TEST_F(MicrosegctlTest, ValidateAsJsonListsDiagnosticsWithTheirPlace) {
  auto path = writePolicy("version: 1\nsegments:\n  - name: s\n    mode: enforcing\n");

  auto run = runCommand({MSEG_MICROSEGCTL, "policy", "validate", path, "-o", "json"});

  ASSERT_TRUE(run);
  EXPECT_EQ(run->status, 1);
  auto report = nlohmann::json::parse(run->out);
  EXPECT_EQ(report["valid"], false);
  EXPECT_EQ(report["errors"], 2);
  EXPECT_EQ(report["diagnostics"][0]["location"], path + ":3:5");
  EXPECT_EQ(report["diagnostics"][1]["location"], path + ":4:11");
  EXPECT_EQ(report["diagnostics"][1]["severity"], "error");
  EXPECT_EQ(report["diagnostics"][1]["line"], 4);
  EXPECT_EQ(report["diagnostics"][1]["message"],
            "invalid mode `enforcing`; expected one of: enforce, audit");
  EXPECT_EQ(report["diagnostics"][0]["message"], "a segment is missing required field `rules`");
}

TEST_F(MicrosegctlTest, ValidateAsJsonSummarisesAValidPolicy) {
  auto run =
      runCommand({MSEG_MICROSEGCTL, "policy", "validate", MSEG_EXAMPLE_POLICY, "-o", "json"});

  ASSERT_TRUE(run);
  EXPECT_EQ(run->status, 0) << run->err;
  auto report = nlohmann::json::parse(run->out);
  EXPECT_EQ(report["valid"], true);
  EXPECT_EQ(report["summary"]["rules"], 10);
  EXPECT_EQ(report["summary"]["workloads"], 4);
}

TEST_F(MicrosegctlTest, NoAgentAtTheSocketSaysSoAndHowToChooseAnother) {
  for (const char* command : {"status", "workloads"}) {
    auto run = runCommand({MSEG_MICROSEGCTL, command, "--socket", "/nonexistent/microsegd.sock"});

    ASSERT_TRUE(run);
    EXPECT_EQ(run->status, 1);
    EXPECT_EQ(run->err, "microsegctl: no agent at /nonexistent/microsegd.sock (is microsegd "
                        "running? --socket to choose another)\n");
  }
}

// A socket file nobody listens on, as a killed agent leaves it.
TEST_F(MicrosegctlTest, StaleSocketIsNoAgent) {
  const std::string path = policy_ + ".sock";
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  close(fd);

  auto run = runCommand({MSEG_MICROSEGCTL, "flows", "--socket", path});

  std::filesystem::remove(path);
  ASSERT_TRUE(run);
  EXPECT_EQ(run->status, 1);
  EXPECT_EQ(run->err, "microsegctl: no agent at " + path +
                          " (is microsegd running? --socket to choose another)\n");
}

TEST_F(MicrosegctlTest, MalformedAgentCommandsExitTwoBeforeAskingTheAgent) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"status", "-o", "yaml"},
           {"status", "--socket"},
           {"workloads", "extra"},
           {"policy", "trace", "--from", "a", "--to", "198.18.0.1", "--port", "80"},
           {"policy", "trace", "--from", "a", "--to", "198.18.0.1", "--proto", "sctp"},
           {"policy", "trace", "--from", "a", "--to", "198.18.0.1", "--proto", "tcp", "--port",
            "70000"},
           {"policy", "trace", "--frm", "a"},
           {"policy", "diff"},
           {"flows", "--verdict", "dropped"},
           {"flows", "--last", "ten"},
           {"flows", "--follow=yes"}}) {
    std::vector<std::string> argv = {MSEG_MICROSEGCTL};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--socket", "/nonexistent/microsegd.sock"});

    auto run = runCommand(argv);

    ASSERT_TRUE(run);
    EXPECT_EQ(run->status, 2) << args[1] << " " << run->err;
    EXPECT_NE(run->err.find("usage: microsegctl " + args[0]), std::string::npos) << run->err;
  }
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

TEST_F(MicrosegctlTest, OptionsBeforeTheCommandAreTakenAsTheCommandsOwn) {
  auto status = runCommand({MSEG_MICROSEGCTL, "--socket", "/nonexistent/microsegd.sock", "-o",
                            "json", "status"});
  auto misplaced = runCommand({MSEG_MICROSEGCTL, "--pin-dir", "/sys/fs/bpf/x", "status"});
  auto unknown = runCommand({MSEG_MICROSEGCTL, "--verbose", "status"});

  ASSERT_TRUE(status && misplaced && unknown);
  EXPECT_EQ(status->status, 1);
  EXPECT_EQ(status->err, "microsegctl: no agent at /nonexistent/microsegd.sock (is microsegd "
                         "running? --socket to choose another)\n");
  EXPECT_EQ(misplaced->status, 2);
  EXPECT_NE(misplaced->err.find("unknown option `--pin-dir`\nusage: microsegctl status"),
            std::string::npos) << misplaced->err;
  EXPECT_EQ(unknown->status, 2);
  EXPECT_EQ(unknown->err, "microsegctl: unknown option `--verbose` before the command; see "
                          "`microsegctl help`\n");
}

TEST_F(MicrosegctlTest, UninstallAsJsonSaysWhatItRemoved) {
  const std::string pin_dir = "/tmp/mseg-ctl-test-pins-" + std::to_string(getpid());

  auto run = runCommand({MSEG_MICROSEGCTL, "uninstall", "--pin-dir", pin_dir, "-o", "json"});

  ASSERT_TRUE(run);
  EXPECT_EQ(run->status, 0) << run->err;
  auto report = nlohmann::json::parse(run->out);
  EXPECT_EQ(report["pin_dir"], pin_dir);
  EXPECT_EQ(report["removed"], false);
  EXPECT_EQ(report["message"], "nothing is pinned at " + pin_dir);
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
