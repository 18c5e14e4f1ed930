// The sweep of what killed test processes leave behind: a test process killed by SIGKILL runs no
// destructors, so the next one removes its namespaces, cgroups, pins and temporary files.
#include "support/leftovers.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "datapath.hpp"
#include "support/cgroup.hpp"
#include "support/poll.hpp"
#include "support/privileged.hpp"
#include "support/subprocess.hpp"

namespace mseg::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr const char* kPolicy = R"(version: 1
workloads:
  - name: worker
    cgroup: work
    labels: {role: worker}
segments:
  - name: app
    rules:
      - name: worker-to-world
        from: {role: worker}
        to: world
        protocol: tcp
        ports: [443]
)";

// A pid no process can have: pids stay below /proc/sys/kernel/pid_max.
pid_t pidThatCannotRun() {
  std::ifstream in("/proc/sys/kernel/pid_max");
  pid_t pid_max = 0;
  in >> pid_max;
  return pid_max + 1;
}

bool agentWroteStatus(const fs::path& state_dir, pid_t pid) {
  std::ifstream file(state_dir / "status.json");
  std::stringstream text;
  text << file.rdbuf();
  auto status = nlohmann::json::parse(text.str(), nullptr, false);
  return !status.is_discarded() && status.value("pid", 0) == pid;
}

bool hasLinkPin(const fs::path& pin_dir) {
  std::error_code err;
  for (fs::directory_iterator it(pin_dir, err), end; !err && it != end; it.increment(err)) {
    if (it->path().filename().string().rfind("link_", 0) == 0) {
      return true;
    }
  }
  return false;
}

// The objects one test process owns, named mseg-t-<pid>-<n> as the support library names them.
struct TestObjects {
  fs::path cgroup;
  std::string netns;
  fs::path pin_dir;
  fs::path temp_dir;
};

TestObjects objectsOf(pid_t pid, const fs::path& cgroup_mount) {
  const std::string prefix = "mseg-t-" + std::to_string(pid) + "-";
  return {testCgroupRoot(cgroup_mount) / (prefix + "0"), prefix + "1",
          fs::path("/sys/fs/bpf") / (prefix + "2"), fs::temp_directory_path() / (prefix + "3")};
}

class LeftoverSweepPrivilegedTest : public ::testing::Test {
protected:
  void SetUp() override {
    MSEG_REQUIRE_PRIVILEGES();
    auto mount = findCgroup2Mount();
    ASSERT_TRUE(mount.ok()) << mount.error().message();
    mount_ = *mount;
  }

  // Everything the test made, also when it failed halfway; the sweep should have left nothing of
  // the dead set.
  void TearDown() override {
    sleeper_.reset();
    for (const auto& objects : made_) {
      if (fs::exists(objects.cgroup)) {
        removeCgroupTree(objects.cgroup);
      }
      (void)runCommand({"ip", "netns", "del", objects.netns});
      if (hasLinkPin(objects.pin_dir)) {
        (void)agent::uninstallDatapath(objects.pin_dir.string());
      }
      std::error_code err;
      fs::remove(objects.pin_dir, err);
      fs::remove_all(objects.temp_dir, err);
    }
    std::error_code err;
    for (const auto& decoy : decoys_) {
      fs::remove_all(decoy, err);
    }
    ::rmdir(testCgroupRoot(mount_).c_str());
  }

  // Creates the set's cgroup (with a child `work`), namespace, empty pin directory and temporary
  // directory.
  TestObjects makeObjects(pid_t owner) {
    TestObjects objects = objectsOf(owner, mount_);
    made_.push_back(objects);
    std::error_code err;
    fs::create_directories(objects.cgroup / "work", err);
    EXPECT_FALSE(err) << objects.cgroup << ": " << err.message();
    EXPECT_TRUE(runChecked({"ip", "netns", "add", objects.netns}).ok()) << objects.netns;
    fs::create_directories(objects.pin_dir, err);
    EXPECT_FALSE(err) << objects.pin_dir << ": " << err.message();
    fs::create_directories(objects.temp_dir / "state", err);
    EXPECT_FALSE(err) << objects.temp_dir << ": " << err.message();
    return objects;
  }

  // Runs microsegd on the set's cgroup and pin directory until its policy enforces, then kills
  // it as the death of its test process would: its links stay pinned and attached.
  void leaveAgentPinsBehind(const TestObjects& objects) {
    const fs::path policy = objects.temp_dir / "policy.yaml";
    std::ofstream(policy) << kPolicy;
    auto agent =
        Subprocess::start({MSEG_MICROSEGD, "--policy", policy.string(), "--cgroup",
                           objects.cgroup.string(), "--pin-dir", objects.pin_dir.string(),
                           "--state-dir", (objects.temp_dir / "state").string(), "--stats-interval",
                           "0", "--control-socket", (objects.temp_dir / "ctl.sock").string()});
    ASSERT_TRUE(agent.ok()) << agent.error().message();
    const fs::path state_dir = objects.temp_dir / "state";
    ASSERT_TRUE(pollUntil(20s, [&] { return agentWroteStatus(state_dir, agent->pid()); }))
        << agent->err();
    agent->kill();
    ASSERT_TRUE(hasLinkPin(objects.pin_dir)) << objects.pin_dir;
  }

  fs::path mount_;
  std::vector<TestObjects> made_;
  std::vector<fs::path> decoys_;
  std::optional<Subprocess> sleeper_;
};

TEST_F(LeftoverSweepPrivilegedTest, NamesOnlyMatchWithAPidAndADash) {
  EXPECT_EQ(ownerOfTestName("mseg-t-4242-0"), 4242);
  EXPECT_EQ(ownerOfTestName("mseg-t-4242-0-deb"), 4242);
  EXPECT_EQ(ownerOfTestName("mseg-t-4242"), std::nullopt);
  EXPECT_EQ(ownerOfTestName("mseg-t-x-0"), std::nullopt);
  EXPECT_EQ(ownerOfTestName("mseg-t--1-0"), std::nullopt);
  EXPECT_EQ(ownerOfTestName("mseg-test-datapath-4242"), std::nullopt);
  EXPECT_EQ(ownerOfTestName("microseg"), std::nullopt);
}

TEST_F(LeftoverSweepPrivilegedTest, SweepsEverythingOfADeadPidAndNothingOfALiveOne) {
  const TestObjects dead = makeObjects(pidThatCannotRun());
  ASSERT_NO_FATAL_FAILURE(leaveAgentPinsBehind(dead));
  auto orphan = Subprocess::start({"sleep", "600"}, Placement{{}, dead.cgroup / "work"});
  ASSERT_TRUE(orphan.ok()) << orphan.error().message();
  auto sleeper = Subprocess::start({"sleep", "600"});
  ASSERT_TRUE(sleeper.ok()) << sleeper.error().message();
  sleeper_.emplace(std::move(*sleeper));
  const TestObjects live = makeObjects(sleeper_->pid());
  const fs::path decoy =
      fs::temp_directory_path() / ("mseg-t" + std::to_string(pidThatCannotRun()) + "-0");
  decoys_.push_back(decoy);
  std::ofstream(decoy) << "not a test object\n";

  sweepLeftoversOfDeadTestProcesses();

  auto orphan_status = orphan->wait(5s);
  ASSERT_TRUE(orphan_status.ok()) << orphan_status.error().message();
  EXPECT_EQ(*orphan_status, 128 + SIGKILL);
  EXPECT_FALSE(fs::exists(dead.pin_dir)) << dead.pin_dir;
  EXPECT_FALSE(fs::exists(fs::path("/run/netns") / dead.netns)) << dead.netns;
  EXPECT_FALSE(fs::exists(dead.cgroup)) << dead.cgroup;
  EXPECT_FALSE(fs::exists(dead.temp_dir)) << dead.temp_dir;
  EXPECT_TRUE(fs::exists(live.pin_dir)) << live.pin_dir;
  EXPECT_TRUE(fs::exists(fs::path("/run/netns") / live.netns)) << live.netns;
  EXPECT_TRUE(fs::exists(live.cgroup / "work")) << live.cgroup;
  EXPECT_TRUE(fs::exists(live.temp_dir)) << live.temp_dir;
  EXPECT_TRUE(fs::exists(decoy)) << decoy;
}

}  // namespace
}  // namespace mseg::testing
