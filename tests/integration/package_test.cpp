// The Debian package on this machine: built with CPack from the build tree, installed with dpkg,
// run the way its systemd unit runs the agent, upgraded over the running agent, removed and
// purged. systemd is not PID 1 here, so the unit's command line, capability bounding set and
// no-new-privileges are applied with setpriv, and its notifications go to a test socket. The
// only override is the attach cgroup: a test cgroup, never the machine's root.
#include <signal.h>
#include <unistd.h>

#include <algorithm>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/notify_socket.hpp"
#include "two_hosts.hpp"

namespace mseg::testing {
namespace {

namespace fs = std::filesystem;

constexpr auto kDpkgTimeout = 120s;
constexpr const char* kUnit = "/lib/systemd/system/microsegd.service";
constexpr const char* kCollectorUnit = "/lib/systemd/system/microseg-collector.service";
constexpr const char* kPinDir = "/sys/fs/bpf/microseg";
constexpr const char* kStateDir = "/var/lib/microseg";

// Every path the package installs that operations.md names.
const std::vector<std::string> kInstalledFiles = {
    "/usr/sbin/microsegd",
    "/usr/sbin/microsegctl",
    "/usr/sbin/microseg-collector",
    kUnit,
    kCollectorUnit,
    "/etc/microseg/microsegd.yaml",
    "/etc/microseg/policy.yaml",
    "/etc/microseg/collector.yaml",
    "/usr/share/man/man8/microsegd.8.gz",
    "/usr/share/man/man8/microsegctl.8.gz",
    "/usr/share/man/man8/microseg-collector.8.gz",
    "/usr/share/doc/microseg/operations.md",
    "/usr/share/doc/microseg/threat-model.md",
    "/usr/share/doc/microseg/examples/erp-crm.yaml",
};

// What purge must leave behind: nothing.
const std::vector<std::string> kPurgedPaths = {"/etc/microseg", kStateDir,
                                               "/var/lib/microseg-collector", kPinDir,
                                               "/usr/sbin/microsegd", kUnit};

bool packageInstalled() {
  auto query = runCommand({"dpkg-query", "-W", "-f=${Status}", "microseg"});
  return query && query->status == 0 && query->out.find("ok installed") != std::string::npos;
}

bool userExists(const std::string& name) {
  auto query = runCommand({"getent", "passwd", name});
  return query && query->status == 0;
}

// The value of the first `key=` line of a unit file, or "".
std::string unitSetting(const std::string& unit_text, const std::string& key) {
  std::istringstream lines(unit_text);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(key + "=", 0) == 0) {
      return line.substr(key.size() + 1);
    }
  }
  return "";
}

std::vector<std::string> words(const std::string& text) {
  std::istringstream stream(text);
  std::vector<std::string> out;
  for (std::string word; stream >> word;) {
    out.push_back(word);
  }
  return out;
}

// The unit's ExecStart under setpriv with the unit's capability bounding set (CAP_BPF ->
// +bpf) and NoNewPrivileges=, so the agent runs with what systemd would give it.
std::vector<std::string> commandOfUnit(const std::string& unit_text) {
  std::string bounding = "-all";
  for (const auto& capability : words(unitSetting(unit_text, "CapabilityBoundingSet"))) {
    std::string name = capability.substr(std::string("CAP_").size());
    std::transform(name.begin(), name.end(), name.begin(), ::tolower);
    bounding += ",+" + name;
  }
  std::vector<std::string> argv = {"setpriv", "--bounding-set", bounding, "--inh-caps", "-all"};
  if (unitSetting(unit_text, "NoNewPrivileges") == "yes") {
    argv.push_back("--no-new-privs");
  }
  argv.push_back("--");
  for (const auto& word : words(unitSetting(unit_text, "ExecStart"))) {
    argv.push_back(word);
  }
  return argv;
}

class PackagePrivilegedTest : public TwoHostTest {
protected:
  void SetUp() override {
    TwoHostTest::SetUp();
    if (HasFatalFailure() || IsSkipped()) {
      return;
    }
    // The test owns the package's paths for its duration; it never touches a real install.
    ASSERT_FALSE(packageInstalled()) << "the microseg package is installed on this machine; "
                                        "the test installs and purges it, so remove it first";
    ASSERT_FALSE(fs::exists(kPinDir)) << kPinDir << " exists: an agent uses the default pins";
    owns_package_paths_ = true;
    deb_dir_ = fs::temp_directory_path() / (uniqueName() + "-deb");
    fs::create_directories(deb_dir_);
  }

  void TearDown() override {
    if (installed_agent_) {
      installed_agent_->kill();
      installed_agent_.reset();
    }
    if (owns_package_paths_) {
      (void)agent::uninstallDatapath(kPinDir);
      if (packageInstalled()) {
        (void)runCommand({"dpkg", "--purge", "microseg"}, kDpkgTimeout);
      }
      std::error_code err;
      fs::remove_all("/run/microseg", err);
    }
    std::error_code err;
    fs::remove_all(deb_dir_, err);
    TwoHostTest::TearDown();
  }

  // Builds the package from this build tree and returns its path.
  fs::path buildPackage() {
    auto built = runCommand({"cpack", "--config", MSEG_CPACK_CONFIG, "-B", deb_dir_.string()},
                            std::chrono::seconds(300));
    EXPECT_TRUE(built && built->status == 0) << (built ? built->out + built->err : "");
    for (const auto& entry : fs::directory_iterator(deb_dir_)) {
      if (entry.path().extension() == ".deb") {
        return entry.path();
      }
    }
    ADD_FAILURE() << "cpack wrote no .deb into " << deb_dir_;
    return {};
  }

  // Starts the installed agent as its unit would; the state and runtime directories are made
  // as systemd makes StateDirectory= and RuntimeDirectory=.
  void startInstalledAgent(NotifySocket& notify) {
    std::ifstream unit_file(kUnit);
    std::stringstream unit;
    unit << unit_file.rdbuf();
    std::vector<std::string> argv = commandOfUnit(unit.str());
    argv.insert(argv.end(), {"--cgroup", cgroup_->path().string()});
    fs::create_directories(kStateDir);
    fs::create_directories("/run/microseg");

    setenv("NOTIFY_SOCKET", notify.path().c_str(), 1);
    auto started = Subprocess::start(argv);
    unsetenv("NOTIFY_SOCKET");
    ASSERT_TRUE(started) << started.error().message();
    installed_agent_.emplace(std::move(*started));
    auto ready = notify.waitFor("READY=1", 30s);
    ASSERT_TRUE(ready) << ready.error().message() << "\n" << installed_agent_->err();
  }

  // The count microsegctl prints for a rule of the running datapath, -1 when it is not listed.
  long counterOf(const std::string& rule) {
    auto run = runCommand({"/usr/sbin/microsegctl", "counters", "--config",
                           "/etc/microseg/microsegd.yaml"});
    EXPECT_TRUE(run && run->status == 0) << (run ? run->err : run.error().message());
    std::smatch match;
    const std::regex line(std::regex_replace(rule, std::regex(R"([()])"), R"(\$&)") +
                          R"(\s+\w+\s+(\d+))");
    if (run && std::regex_search(run->out, match, line)) {
      return std::stol(match[1]);
    }
    return -1;
  }

  Placement database() const {
    return {server_ns_->path(), cgroup_->path("system.slice/postgresql.service")};
  }

  bool owns_package_paths_ = false;
  fs::path deb_dir_;
  std::optional<Subprocess> installed_agent_;
};

TEST_F(PackagePrivilegedTest, InstallsWhereTheDocsSayStartsNothingAndPurgesWithoutTrace) {
  const fs::path deb = buildPackage();
  ASSERT_FALSE(deb.empty());
  auto conffiles = runCommand({"dpkg-deb", "--info", deb.string(), "conffiles"});

  auto install = runCommand({"dpkg", "--install", deb.string()}, kDpkgTimeout);

  ASSERT_TRUE(install);
  ASSERT_EQ(install->status, 0) << install->out << install->err;
  for (const auto& path : kInstalledFiles) {
    EXPECT_TRUE(fs::exists(path)) << path;
  }
  ASSERT_TRUE(conffiles);
  EXPECT_EQ(conffiles->out, "/etc/microseg/microsegd.yaml\n/etc/microseg/policy.yaml\n"
                            "/etc/microseg/collector.yaml\n");
  EXPECT_FALSE(fs::exists(kPinDir)) << "installing must not start the agent";
  EXPECT_TRUE(userExists("microseg-collector"));
  auto verify = runCommand({"systemd-analyze", "verify", kUnit, kCollectorUnit}, 60s);
  ASSERT_TRUE(verify);
  EXPECT_EQ(verify->status, 0) << verify->out << verify->err;
  EXPECT_EQ(verify->err.find("microseg"), std::string::npos) << verify->err;
  auto policy = runCommand({"/usr/sbin/microsegctl", "policy", "validate",
                            "/etc/microseg/policy.yaml"});
  ASSERT_TRUE(policy);
  EXPECT_EQ(policy->status, 0) << policy->err;
  // As its unit runs it: its own user, no capabilities. Its certificates are the operator's to
  // make: until they exist the check names the first missing file.
  const std::vector<std::string> check_collector = {
      "setpriv", "--reuid", "microseg-collector", "--regid", "microseg-collector",
      "--clear-groups", "--bounding-set", "-all", "--no-new-privs", "--",
      "/usr/sbin/microseg-collector", "--config", "/etc/microseg/collector.yaml",
      "--check-config"};
  auto without_certificates = runCommand(check_collector);
  ASSERT_TRUE(without_certificates);
  EXPECT_EQ(without_certificates->status, 2);
  EXPECT_NE(without_certificates->err.find("tls.cert /etc/microseg/collector/collector.crt: No "
                                           "such file or directory"),
            std::string::npos) << without_certificates->err;
  const std::string certs = "/etc/microseg/collector";
  for (const auto& step : std::vector<std::vector<std::string>>{
           {"bash", MSEG_CERTS_SCRIPT, "--dir", certs, "ca"},
           {"bash", MSEG_CERTS_SCRIPT, "--dir", certs, "collector", "collector.test"},
           {"chgrp", "microseg-collector", certs + "/collector.key"},
           {"chmod", "0640", certs + "/collector.key"}}) {
    ASSERT_TRUE(runChecked(step)) << step[0];
  }
  auto collector = runCommand(check_collector);
  ASSERT_TRUE(collector);
  EXPECT_EQ(collector->status, 0) << collector->out << collector->err;
  auto man = runCommand({"sh", "-c", "zcat /usr/share/man/man8/microsegd.8.gz"});
  ASSERT_TRUE(man);
  EXPECT_NE(man->out.find("stats\\-interval"), std::string::npos) << "man page from --help";

  auto purge = runCommand({"dpkg", "--purge", "microseg"}, kDpkgTimeout);

  ASSERT_TRUE(purge);
  EXPECT_EQ(purge->status, 0) << purge->out << purge->err;
  for (const auto& path : kPurgedPaths) {
    EXPECT_FALSE(fs::exists(path)) << path;
  }
  EXPECT_FALSE(userExists("microseg-collector"));
}

// The default policy is in audit mode: a connection it would deny passes and is counted. An
// upgrade leaves the running datapath alone; removal refuses while the agent runs, then
// detaches and unpins everything once it is stopped.
TEST_F(PackagePrivilegedTest, InstalledAgentAuditsLikeItsUnitAndRemovalDetachesIt) {
  ASSERT_TRUE(cgroup_->createChild("system.slice/postgresql.service"));
  auto listener = TcpEchoServer::start(database(), "::", 5432);
  ASSERT_TRUE(listener) << listener.error().message();
  const fs::path deb = buildPackage();
  ASSERT_FALSE(deb.empty());
  ASSERT_TRUE(runChecked({"dpkg", "--install", deb.string()}, kDpkgTimeout));
  auto notify = NotifySocket::create();
  ASSERT_TRUE(notify);
  startInstalledAgent(*notify);
  ASSERT_FALSE(HasFatalFailure());

  // From an address the policy does not list: it would deny, and in audit mode it passes.
  EXPECT_EQ(connectFrom(client("other.scope"), kServer4, 5432), 0);
  EXPECT_GE(counterOf("(default deny, audit)"), 1);
  // microsegctl finds the agent's socket through the same configuration file.
  auto status = runCommand({"/usr/sbin/microsegctl", "status", "--config",
                            "/etc/microseg/microsegd.yaml"});
  ASSERT_TRUE(status);
  EXPECT_EQ(status->status, 0) << status->err;
  EXPECT_NE(status->out.find("policy         /etc/microseg/policy.yaml\n"), std::string::npos)
      << status->out;

  auto upgrade = runCommand({"dpkg", "--install", deb.string()}, kDpkgTimeout);
  ASSERT_TRUE(upgrade);
  EXPECT_EQ(upgrade->status, 0) << upgrade->out << upgrade->err;
  EXPECT_TRUE(fs::exists(std::string(kPinDir) + "/link_mseg_ingress")) << "upgrade detached";

  auto busy_removal = runCommand({"dpkg", "--remove", "microseg"}, kDpkgTimeout);
  ASSERT_TRUE(busy_removal);
  EXPECT_NE(busy_removal->status, 0);
  const std::string said = busy_removal->out + busy_removal->err;
  EXPECT_NE(said.find("a microsegd is running with pin directory"), std::string::npos) << said;
  EXPECT_TRUE(packageInstalled());

  ::kill(installed_agent_->pid(), SIGTERM);
  auto stopped = installed_agent_->wait(20s);
  ASSERT_TRUE(stopped);
  EXPECT_EQ(*stopped, 0) << installed_agent_->err();
  EXPECT_TRUE(notify->waitFor("STOPPING=1", 5s));
  EXPECT_TRUE(fs::exists(std::string(kPinDir) + "/link_mseg_ingress"))
      << "a stopped agent leaves its programs enforcing";
  fs::remove_all("/run/microseg");  // systemd removes RuntimeDirectory= at stop

  auto purge = runCommand({"dpkg", "--purge", "microseg"}, kDpkgTimeout);

  ASSERT_TRUE(purge);
  EXPECT_EQ(purge->status, 0) << purge->out << purge->err;
  for (const auto& path : kPurgedPaths) {
    EXPECT_FALSE(fs::exists(path)) << path;
  }
}

}  // namespace
}  // namespace mseg::testing
