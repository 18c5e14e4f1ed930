// microsegctl against a running microsegd: every command that asks the agent, as an operator
// runs it, with what it prints and its exit code, while the agent enforces between two hosts.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/unique_fd.hpp"
#include "two_hosts.hpp"

namespace mseg::testing {
namespace {

namespace fs = std::filesystem;

// A policy equal to kPolicy but for the TCP ports client may use: 7002 instead of 7001.
std::string policyWithPort7002() {
  std::string text = kPolicy;
  text.replace(text.find("ports: [7001, 7100-7199]"), 24, "ports: [7002, 7100-7199]");
  return text;
}

// Whether one line of `text` holds every word, in order.
bool hasLine(const std::string& text, const std::vector<std::string>& words) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    size_t at = 0;
    bool all = true;
    for (const auto& word : words) {
      at = line.find(word, at);
      if (at == std::string::npos) {
        all = false;
        break;
      }
      at += word.size();
    }
    if (all) {
      return true;
    }
  }
  return false;
}

class ControlPrivilegedTest : public TwoHostTest {
protected:
  // Runs microsegctl with `args` and the agent's --socket, prepended by `wrapper` (setpriv).
  CommandResult ctl(std::vector<std::string> args, const std::vector<std::string>& wrapper = {}) {
    std::vector<std::string> argv = wrapper;
    argv.push_back(MSEG_MICROSEGCTL);
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--socket", agent_->controlSocket()});
    auto run = runCommand(argv, 30s);
    EXPECT_TRUE(run) << (run ? "" : run.error().message());
    return run ? *run : CommandResult{-1, "", ""};
  }

  nlohmann::json ctlJson(std::vector<std::string> args) {
    args.insert(args.end(), {"-o", "json"});
    auto run = ctl(args);
    auto parsed = nlohmann::json::parse(run.out, nullptr, false);
    EXPECT_FALSE(parsed.is_discarded()) << run.out << run.err;
    return parsed;
  }

  // `microsegctl flows --follow` with `args`, once it shows its header (it is connected);
  // nullopt, after a failed expectation, when it does not.
  std::optional<Subprocess> follow(const std::vector<std::string>& args = {}) {
    std::vector<std::string> argv = {MSEG_MICROSEGCTL, "flows", "--follow"};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--socket", agent_->controlSocket()});
    auto follower = Subprocess::start(argv);
    EXPECT_TRUE(follower);
    if (!follower) {
      return std::nullopt;
    }
    bool connected = pollUntil(10s, [&] {
      (void)follower->wait(50ms);
      return follower->out().find("TIME") != std::string::npos;
    });
    EXPECT_TRUE(connected) << follower->err();
    return connected ? std::optional<Subprocess>(std::move(*follower)) : std::nullopt;
  }

  std::string writeFile(const std::string& name, const std::string& text) {
    auto path = agent_->workDir() / name;
    std::ofstream(path) << text;
    return path.string();
  }

  static constexpr const char* kUnprivileged = "--reuid=65534";
};

TEST_F(ControlPrivilegedTest, StatusShowsPolicyModesCountersAndExporter) {
  serveTcp(7001);
  startAgent();
  ASSERT_EQ(connectFrom(client(), kServer4, 7001), 0);
  ASSERT_EQ(connectFrom(client(), kServer4, 7002), EPERM);

  auto table = ctl({"status"});
  auto json = ctlJson({"status"});

  EXPECT_EQ(table.status, 0) << table.err;
  EXPECT_NE(table.out.find("attach cgroup  " + cgroup_->path().string() + "\n"),
            std::string::npos) << table.out;
  EXPECT_NE(table.out.find("SEGMENT  MODE     RULES\napp      enforce  6\nwatch    audit    1\n"),
            std::string::npos) << table.out;
  EXPECT_TRUE(hasLine(table.out, {"app/client-to-server-tcp", "allow", "2"})) << table.out;
  EXPECT_TRUE(hasLine(table.out, {"event_lost", "0"})) << table.out;
  EXPECT_EQ(json["pid"], agent_->process()->pid());
  EXPECT_EQ(json["pin_dir"], agent_->pinDir());
  EXPECT_EQ(json["policy_file"], agent_->policyPath().string());
  EXPECT_EQ(json["policy_version"], 1);
  EXPECT_EQ(json["policy_hash"].get<std::string>().size(), 64u);
  EXPECT_EQ(json["rule_count"], 7);
  EXPECT_EQ(json["segments"][1], (nlohmann::json{{"name", "watch"}, {"mode", "audit"},
                                                 {"rules", 1}}));
  EXPECT_EQ(json["last_reload"], nullptr);
  EXPECT_EQ(json["last_error"], "");
  EXPECT_NE(json["exporter"]["flow_log"].get<std::string>().find("flows.ocsf.jsonl"),
            std::string::npos);
}

TEST_F(ControlPrivilegedTest, CountersAsJsonHaveTheFieldsOfStatus) {
  serveTcp(7001);
  startAgent();
  ASSERT_EQ(connectFrom(client(), kServer4, 7001), 0);

  auto run = runCommand({MSEG_MICROSEGCTL, "-o", "json", "counters", "--pin-dir",
                         agent_->pinDir()}, 30s);

  ASSERT_TRUE(run);
  EXPECT_EQ(run->status, 0) << run->err;
  auto json = nlohmann::json::parse(run->out, nullptr, false);
  ASSERT_FALSE(json.is_discarded()) << run->out;
  EXPECT_EQ(json["policy_version"], 1);
  // Counted twice: the client's egress and the server's ingress.
  nlohmann::json allowed = {{"rule", "app/client-to-server-tcp"}, {"verdict", "allow"},
                            {"hits", 2}};
  EXPECT_NE(std::find(json["rules"].begin(), json["rules"].end(), allowed), json["rules"].end())
      << json.dump(2);
  EXPECT_EQ(json["reasons"][0].size(), 2u) << json.dump(2);
}

TEST_F(ControlPrivilegedTest, StatusShowsTheLastErrorOfABadReloadWhileTheOldPolicyEnforces) {
  serveTcp(7001);
  serveTcp(7002);
  startAgent();
  agent_->writePolicy("version: 1\nsegments:\n  - name: s\n    mode: enforcing\n    rules: []\n");
  agent_->reload();
  ASSERT_TRUE(pollUntil(10s, [&] { return !agent_->lastError().empty(); }));

  auto table = ctl({"status"});
  auto json = ctlJson({"status"});

  EXPECT_EQ(table.status, 1);
  EXPECT_NE(table.out.find("last reload    rejected at "), std::string::npos) << table.out;
  EXPECT_NE(table.out.find(": version 1 keeps enforcing"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find(agent_->policyPath().string() +
                           ":4:11: error: invalid mode `enforcing`"),
            std::string::npos) << table.out;
  EXPECT_EQ(json["last_reload"]["result"], "rejected");
  EXPECT_GT(json["last_error_unix_nano"].get<uint64_t>(), 0u);
  EXPECT_EQ(json["policy_version"], 1);
  EXPECT_EQ(connectFrom(client(), kServer4, 7001), 0);
  EXPECT_EQ(connectFrom(client(), kServer4, 7002), EPERM);
  const std::string path = agent_->policyPath().string();
  EXPECT_EQ(json["last_error"].get<std::string>().find(path + ": " + path),
            std::string::npos) << "the path once: " << json["last_error"];
}

// Once a reload applies, the error of the one before is history: status says none, exit 0.
TEST_F(ControlPrivilegedTest, GoodReloadAfterABadOneClearsTheLastError) {
  startAgent();
  agent_->writePolicy("version: 1\nsegments:\n  - name: s\n    mode: enforcing\n    rules: []\n");
  agent_->reload();
  ASSERT_TRUE(pollUntil(10s, [&] { return !agent_->lastError().empty(); }));
  agent_->writePolicy(policyWithPort7002());
  agent_->reload();

  CommandResult table;
  ASSERT_TRUE(pollUntil(10s, [&] {
    table = ctl({"status"});
    return table.out.find("last reload    applied at ") != std::string::npos;
  })) << table.out;
  auto json = ctlJson({"status"});

  EXPECT_EQ(table.status, 0) << table.out;
  EXPECT_NE(table.out.find("last reload    applied at "), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("last error     none\n"), std::string::npos) << table.out;
  EXPECT_EQ(json["last_error"], "");
}

TEST_F(ControlPrivilegedTest, TraceNamesTheRuleTheKernelApplies) {
  serveTcp(7001);
  serveTcp(7150);
  startAgent();

  auto denied = ctl({"policy", "trace", "--from", "client", "--to", kServer4, "--proto", "tcp",
                     "--port", "7150"});
  auto allowed = ctlJson({"policy", "trace", "--from", kClient4, "--to", "server", "--proto",
                          "tcp", "--port", "7001"});

  EXPECT_EQ(denied.status, 0) << denied.err;
  EXPECT_NE(denied.out.find("verdict    deny\nrule       app/no-client-admin ("),
            std::string::npos) << denied.out;
  EXPECT_NE(denied.out.find("path       client -> 198.18.61.2 (server-host), egress tcp/7150"),
            std::string::npos) << denied.out;
  EXPECT_EQ(connectFrom(client(), kServer4, 7150), EPERM);
  EXPECT_EQ(allowed["verdict"], "allow");
  EXPECT_EQ(allowed["direction"], "ingress");
  EXPECT_EQ(allowed["rule"], "app/client-to-server-tcp");
  EXPECT_EQ(allowed["peer"], "client-host");
  EXPECT_EQ(allowed["workload_cgroups"], nlohmann::json::array({"server.service"}));
  EXPECT_EQ(connectFrom(client(), kServer4, 7001), 0);
}

TEST_F(ControlPrivilegedTest, TraceOfAnUnknownWorkloadListsTheKnownOnes) {
  startAgent();

  auto run = ctl({"policy", "trace", "--from", "clinet", "--to", kServer4, "--proto", "tcp",
                  "--port", "7001"});

  EXPECT_EQ(run.status, 1);
  EXPECT_EQ(run.err, "microsegctl: unknown workload `clinet`: the running policy defines client, "
                     "batch, server; or give an IP address\n");
}

TEST_F(ControlPrivilegedTest, DiffShowsTheOpenedAndClosedPathsWithoutApplyingThem) {
  serveTcp(7001);
  startAgent();
  const std::string changed = writeFile("changed.yaml", policyWithPort7002());

  auto table = ctl({"policy", "diff", changed});
  auto json = ctlJson({"policy", "diff", changed});
  auto same = ctl({"policy", "diff", agent_->policyPath().string()});

  EXPECT_EQ(table.status, 1) << table.err;
  EXPECT_TRUE(hasLine(table.out, {"app/client-to-server-tcp", "changed", "allow"})) << table.out;
  EXPECT_TRUE(hasLine(table.out, {"closes", "client", "egress", "server-host", "tcp/7001",
                                  "allow (app/client-to-server-tcp)", "deny (default deny)"}))
      << table.out;
  EXPECT_TRUE(hasLine(table.out, {"opens", "server", "ingress", "client-host", "tcp/7002"}))
      << table.out;
  nlohmann::json opened = {{"workload", "client"}, {"peer", "server-host"},
                           {"direction", "egress"}, {"protocol", "tcp"},
                           {"first_port", 7002},    {"last_port", 7002},
                           {"old_verdict", "deny"}, {"new_verdict", "allow"},
                           {"change", "opens"},     {"old_rule", "(default deny)"},
                           {"new_rule", "app/client-to-server-tcp"}};
  EXPECT_NE(std::find(json["paths"].begin(), json["paths"].end(), opened), json["paths"].end())
      << json.dump(2);
  EXPECT_EQ(same.status, 0);
  EXPECT_NE(same.out.find("no changes"), std::string::npos) << same.out;
  EXPECT_EQ(connectFrom(client(), kServer4, 7001), 0);
}

// One workload for every top-level cgroup in place of the per-service ones: the diff must say
// first which cgroups change hands, and tell the removed workloads by their cgroups rather than
// as openings port by port.
TEST_F(ControlPrivilegedTest, DiffOfARestructuredPolicyTellsCgroupsAndRemovedWorkloadsFirst) {
  startAgent();
  const std::string everything = writeFile("everything.yaml", R"(version: 1
workloads:
  - name: everything
    cgroup: "*"
    labels: {role: all}
inventory:
  - name: server-host
    cidrs: [198.18.61.2/32]
    labels: {role: server}
segments:
  - name: app
    rules:
      - name: all-to-server
        from: {role: all}
        to: {role: server}
        protocol: tcp
        ports: [7001]
)");

  auto table = ctl({"policy", "diff", everything});

  EXPECT_EQ(table.status, 1) << table.err;
  EXPECT_TRUE(hasLine(table.out, {"client.service (and 1 below)", "client", "everything"}))
      << table.out;
  EXPECT_TRUE(hasLine(table.out, {"server.service", "server", "everything"})) << table.out;
  EXPECT_TRUE(hasLine(table.out, {"workload removed: client: cgroup client.service (and 1 "
                                  "below) becomes workload everything"}))
      << table.out;
  EXPECT_TRUE(hasLine(table.out, {"workload removed: batch: no cgroup of this host belongs to it"}))
      << table.out;
  EXPECT_LT(table.out.find("CGROUP"), table.out.find("PATH")) << table.out;
  EXPECT_FALSE(hasLine(table.out, {"opens", "client", "egress"})) << table.out;
  EXPECT_TRUE(hasLine(table.out, {"closes", "everything", "egress", "any", "any traffic"}))
      << table.out;
}

// The agent compiles what `policy diff` sends: a caller must not make it allocate without
// bound, neither with one huge policy nor with many at once.
TEST_F(ControlPrivilegedTest, DiffOfAPolicyPastTheSizeLimitIsRefusedBeforeSending) {
  startAgent();
  std::string text = kPolicy;
  text += "# " + std::string(33 << 20, 'x') + "\n";
  const std::string huge = writeFile("huge.yaml", text);

  auto run = ctl({"policy", "diff", huge});

  EXPECT_EQ(run.status, 1);
  EXPECT_EQ(run.err, "microsegctl: policy " + huge + " is 33.0 MiB; the agent compares policies "
                     "of at most 32 MiB (`microsegctl policy validate` checks larger ones "
                     "without the agent)\n");
}

// The most memory the agent's process has used so far (VmHWM), in kB.
long peakMemoryKb(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmHWM:", 0) == 0) {
      return std::stol(line.substr(6));
    }
  }
  return -1;
}

TEST_F(ControlPrivilegedTest, ConcurrentDiffsAreCompiledOneAtATime) {
  // The agent enforces 30,000 rules (about 3 MB of YAML); each diff compiles a copy with one
  // port changed, so what it costs is the compile, not a large reply.
  std::string text = kPolicy;
  for (int i = 0; i < 30000; i++) {
    text += "      - name: many-" + std::to_string(i) +
            "\n        from: {role: client}\n        to: {role: server}\n        protocol: tcp"
            "\n        ports: [" + std::to_string(10000 + i) + "]\n";
  }
  agent_->writePolicy(text);
  startAgent();
  text.replace(text.rfind("ports: [39999]"), 14, "ports: [50000]");
  const std::string changed = writeFile("changed.yaml", text);
  const pid_t pid = agent_->process()->pid();
  const long before = peakMemoryKb(pid);
  ASSERT_EQ(ctl({"policy", "diff", changed}).status, 1);
  const long after_one = peakMemoryKb(pid);

  std::vector<Subprocess> diffs;
  for (int i = 0; i < 4; i++) {
    auto diff = Subprocess::start({MSEG_MICROSEGCTL, "policy", "diff", changed, "--socket",
                                   agent_->controlSocket()});
    ASSERT_TRUE(diff);
    diffs.push_back(std::move(*diff));
  }
  for (auto& diff : diffs) {
    auto status = diff.wait(120s);
    ASSERT_TRUE(status);
    EXPECT_EQ(*status, 1) << diff.err();
    EXPECT_TRUE(hasLine(diff.out(), {"watch/many-29999", "changed"})) << diff.out() << diff.err();
  }
  const long after_four = peakMemoryKb(pid);

  const long one_diff = after_one - before;
  std::printf("peak memory of the agent: %ld kB before, %ld kB after one diff, %ld kB after "
              "four at once\n", before, after_one, after_four);
  ASSERT_GT(one_diff, 10000) << "a diff of 30,000 rules should cost some memory";
  // Compiled one at a time, four cost the peak of one, plus the requests that wait (about
  // twice their text each); compiled at once, about three more diffs' worth.
  EXPECT_LT(after_four - after_one, one_diff)
      << "four diffs at once must not take four times the memory of one";
}

TEST_F(ControlPrivilegedTest, DiffOfAnInvalidFileShowsItsErrorsAndComparesNothing) {
  startAgent();
  const std::string bad = writeFile("bad.yaml", "version: 1\nsegments: 3\n");

  auto run = ctl({"policy", "diff", bad});

  EXPECT_EQ(run.status, 1);
  EXPECT_NE(run.err.find(bad + ":2:11: error:"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("was not compared with the running policy"), std::string::npos);
  EXPECT_EQ(run.out, "");
}

TEST_F(ControlPrivilegedTest, DiffOfAPolicyDirectoryNamesTheFileOfEachChange) {
  serveTcp(7001);
  startAgent();
  const auto dir = usePolicyDirectory();
  const auto same = ctl({"policy", "diff", dir.string()});
  std::stringstream app;
  app << std::ifstream(dir / "20-app.yaml").rdbuf();
  std::string moved = app.str();
  moved.replace(moved.find("ports: [7001, 7100-7199]"), 24, "ports: [7002, 7100-7199]");
  replaceFile(dir / "20-app.yaml", moved);

  auto json = ctlJson({"policy", "diff", dir.string()});

  EXPECT_EQ(same.status, 0) << same.err;
  EXPECT_NE(same.out.find("no changes"), std::string::npos) << same.out;
  ASSERT_EQ(json["rules"].size(), 1u) << json.dump(2);
  EXPECT_EQ(json["rules"][0]["rule"], "app/client-to-server-tcp");
  EXPECT_EQ(json["rules"][0]["location"], (dir / "20-app.yaml").string() + ":5:9");
  EXPECT_EQ(connectFrom(client(), kServer4, 7001), 0);
}

TEST_F(ControlPrivilegedTest, FlowsFollowShowsAFlowMadeWhileFollowing) {
  serveTcp(7001);
  startAgent();
  auto follower = follow({"--workload", "client", "--last", "0"});
  ASSERT_TRUE(follower);

  ASSERT_EQ(connectFrom(client(), kServer4, 7001), 0);

  EXPECT_TRUE(pollUntil(10s, [&] {
    (void)follower->wait(50ms);
    return hasLine(follower->out(), {"start", "allow", "client", "egress",
                                     "198.18.61.2 server-host", "tcp/7001",
                                     "app/client-to-server-tcp"});
  })) << follower->out() << follower->err();
  EXPECT_TRUE(follower->running()) << follower->err();
}

// Each follower holds one of the control server's threads for as long as it follows: past the
// limit they are refused, naming it, so that nobody is locked out of `status`.
TEST_F(ControlPrivilegedTest, FollowersPastTheLimitAreRefusedAndOtherCallsStillAnswer) {
  startAgent();
  std::vector<Subprocess> followers;
  for (int i = 0; i < 12; i++) {
    auto follower = Subprocess::start({MSEG_MICROSEGCTL, "flows", "--follow", "--last", "0",
                                       "--socket", agent_->controlSocket()});
    ASSERT_TRUE(follower);
    followers.push_back(std::move(*follower));
  }
  size_t refused = 0;
  ASSERT_TRUE(pollUntil(20s, [&] {
    refused = 0;
    for (auto& follower : followers) {
      (void)follower.wait(10ms);
      refused += follower.running() ? 0 : 1;
    }
    return refused >= 4;
  }));

  auto status = ctl({"status"});
  auto workloads = ctl({"workloads"});

  EXPECT_EQ(refused, 4u);
  for (auto& follower : followers) {
    if (!follower.running()) {
      EXPECT_EQ(*follower.wait(0ms), 1);
      EXPECT_NE(follower.err().find("the agent already serves 8 `flows --follow` callers, the "
                                    "most it serves at once"),
                std::string::npos) << follower.err();
    }
  }
  EXPECT_EQ(status.status, 0) << status.err;
  EXPECT_EQ(workloads.status, 0) << workloads.err;
}

// A follower that reads slower than records come misses those that leave the agent's ring;
// it is told how many, on stderr, and its output goes on.
TEST_F(ControlPrivilegedTest, SlowFollowerIsToldHowManyRecordsItSkipped) {
  serveUdp(7001);
  startAgent();
  auto follower = follow({"--last", "0"});
  ASSERT_TRUE(follower);

  // Nobody reads the follower's output meanwhile: its pipe fills and it stops reading the
  // stream, while each datagram from a new socket (a new port) makes two records, a start on
  // both hosts: far more than the ring and what gRPC buffers on the way hold.
  ASSERT_EQ(*runIn(client(), [] {
    auto server = makeSocketAddress(kServer4, 7001);
    for (int i = 0; i < 15000; i++) {
      UniqueFd socket(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
      if (sendto(socket.get(), "x", 1, 0, server->get(), server->length) != 1) {
        return errno;
      }
    }
    return 0;
  }, 120s), 0);

  EXPECT_TRUE(pollUntil(30s, [&] {
    (void)follower->wait(50ms);
    return follower->err().find("microsegctl: skipped ") != std::string::npos;
  })) << follower->err();
  EXPECT_NE(follower->err().find(" flow records: they left the agent's ring of the last 4096 "
                                 "before this reader took them"),
            std::string::npos) << follower->err();
  EXPECT_TRUE(follower->running());
}

// The agent stopping ends every follow: the follower says so and exits 1, so a script that
// watches flows notices.
TEST_F(ControlPrivilegedTest, FollowerExitsNonZeroWhenTheAgentStops) {
  startAgent();
  auto follower = follow();
  ASSERT_TRUE(follower);

  ASSERT_TRUE(agent_->stop());
  auto status = follower->wait(10s);

  ASSERT_TRUE(status) << "the follower still runs after the agent stopped";
  EXPECT_EQ(*status, 1);
  EXPECT_EQ(follower->err(), "microsegctl: the agent at " + agent_->controlSocket() +
                                 " ended the flow stream: microsegd stopped or restarted\n");
}

TEST_F(ControlPrivilegedTest, FlowsFilterByVerdict) {
  serveTcp(7001);
  startAgent();
  ASSERT_EQ(connectFrom(client(), kServer4, 7001), 0);
  ASSERT_EQ(connectFrom(client(), kServer4, 7002), EPERM);

  std::vector<nlohmann::json> denied;
  ASSERT_TRUE(pollUntil(10s, [&] {
    denied.clear();
    auto run = ctl({"flows", "--verdict", "denied", "-o", "json"});
    std::istringstream lines(run.out);
    for (std::string line; std::getline(lines, line);) {
      denied.push_back(nlohmann::json::parse(line));
    }
    return !denied.empty();
  }));
  auto allowed = ctl({"flows", "--verdict", "allowed"});

  for (const auto& record : denied) {
    EXPECT_EQ(record["verdict"], "deny");
    EXPECT_EQ(record["peer_port"], 7002);
    EXPECT_EQ(record["peer_address"], kServer4);
    EXPECT_EQ(record["workload"]["name"], "client");
  }
  EXPECT_TRUE(hasLine(allowed.out, {"allow", "tcp/7001"})) << allowed.out;
  EXPECT_EQ(allowed.out.find("tcp/7002"), std::string::npos) << allowed.out;
}

TEST_F(ControlPrivilegedTest, FlowsOfAnUnknownWorkloadListTheKnownOnes) {
  startAgent();

  auto run = ctl({"flows", "--workload", "nobody"});

  EXPECT_EQ(run.status, 1);
  EXPECT_EQ(run.err, "microsegctl: unknown workload `nobody`: the running policy defines client, "
                     "batch, server\n");
}

TEST_F(ControlPrivilegedTest, FlowsWithTelemetryOffSayWhyThereAreNone) {
  agent_->addArguments({"--telemetry", "off"});
  startAgent();

  auto flows = ctl({"flows"});
  auto status = ctl({"status"});

  EXPECT_EQ(flows.status, 1);
  EXPECT_NE(flows.err.find("the agent runs with --telemetry off: it records no flows"),
            std::string::npos) << flows.err;
  EXPECT_NE(status.out.find("exporter       telemetry off"), std::string::npos) << status.out;
}

TEST_F(ControlPrivilegedTest, WorkloadsShowsSelectedInheritedAndUnselectedCgroups) {
  startAgent();

  auto table = ctl({"workloads"});
  auto json = ctlJson({"workloads"});

  EXPECT_EQ(table.status, 0) << table.err;
  EXPECT_TRUE(hasLine(table.out, {"client.service/worker", "client *", "any", "role=client",
                                  "enforce", "enforce"})) << table.out;
  EXPECT_TRUE(hasLine(table.out, {"batch", "batch-*.service", "any"})) << table.out;
  EXPECT_NE(table.out.find("CGROUPS NO WORKLOAD SELECTS (their traffic is not judged)\n"
                           "(attach cgroup)\nother.scope\n"),
            std::string::npos) << table.out;
  std::map<std::string, std::pair<std::string, bool>> cgroups;
  for (const auto& cgroup : json["cgroups"]) {
    cgroups[cgroup["cgroup"]] = {cgroup["workload"], cgroup["inherited"]};
  }
  EXPECT_EQ(cgroups["client.service"], std::make_pair(std::string("client"), false));
  EXPECT_EQ(cgroups["client.service/worker"], std::make_pair(std::string("client"), true));
  EXPECT_EQ(cgroups["server.service"], std::make_pair(std::string("server"), false));
  EXPECT_EQ(cgroups["other.scope"], std::make_pair(std::string(""), false));
}

// A workload chooses its command name (prctl) and, where cgroups are delegated, its cgroup's
// name: neither may reach the operator's terminal as a control sequence, and bytes that are not
// UTF-8 must not make the agent's answers unreadable (proto3 strings must be UTF-8).
TEST_F(ControlPrivilegedTest, TablesShowNamesAWorkloadChoseAsEscapedText) {
  serveTcp(7001);
  const std::string evil_cgroup = "other.scope/evil\x1b[31mRED\x1b[0m\r\xff" "fake.service";
  ASSERT_TRUE(cgroup_->createChild(evil_cgroup));
  startAgent();
  ASSERT_EQ(*runIn(client(), [] {
    prctl(PR_SET_NAME, "\x1b[2J\xff\x1b[31mX\r", 0, 0, 0);
    return tcpConnect(kServer4, 7001, kQuick);
  }), 0);
  CommandResult flows;
  ASSERT_TRUE(pollUntil(10s, [&] {
    flows = ctl({"flows", "--verdict", "allowed"});
    return flows.out.find("pid ") != std::string::npos;
  })) << flows.out << flows.err;

  auto workloads = ctl({"workloads"});
  auto json = ctlJson({"workloads"});

  EXPECT_EQ(workloads.out.find('\x1b'), std::string::npos) << workloads.out;
  EXPECT_EQ(workloads.out.find('\r'), std::string::npos) << workloads.out;
  EXPECT_NE(workloads.out.find(
                "\nother.scope/evil\\x1b[31mRED\\x1b[0m\\x0d\\xfffake.service\n"),
            std::string::npos) << workloads.out;
  EXPECT_EQ(flows.out.find('\x1b'), std::string::npos) << flows.out;
  EXPECT_TRUE(hasLine(flows.out, {"start", "client", "egress",
                                  "\\x1b[2J\\xff\\x1b[31mX\\x0d"})) << flows.out;
  bool found = false;
  for (const auto& cgroup : json["cgroups"]) {
    found = found || cgroup["cgroup"] == "other.scope/evil\x1b[31mRED\x1b[0m\r\\xfffake.service";
  }
  EXPECT_TRUE(found) << "JSON keeps control characters, escaped by JSON's rules, and writes "
                        "bytes that are not UTF-8 as \\xHH";
  auto logged = agent_->flowLogLines();
  ASSERT_FALSE(logged.empty());
  EXPECT_FALSE(nlohmann::json::parse(logged.front(), nullptr, false).is_discarded());
}

TEST_F(ControlPrivilegedTest, GroupMembersMayUseTheSocketAndOthersAreToldHowToGetIn) {
  agent_->addArguments({"--control-group", "nogroup"});
  startAgent();
  struct stat socket {};
  ASSERT_EQ(stat(agent_->controlSocket().c_str(), &socket), 0);

  auto outsider = ctl({"status"}, {"setpriv", kUnprivileged, "--regid=65533", "--clear-groups"});
  auto member = ctl({"status"}, {"setpriv", kUnprivileged, "--regid=65534", "--clear-groups"});

  EXPECT_EQ(socket.st_mode & 07777, 0660u);
  EXPECT_EQ(socket.st_gid, 65534u);
  EXPECT_EQ(outsider.status, 1);
  EXPECT_EQ(outsider.err, "microsegctl: permission denied on " + agent_->controlSocket() +
                              ": run as root or as a member of group nogroup\n");
  EXPECT_EQ(member.status, 0) << member.err;
  EXPECT_NE(member.out.find("policy         " + agent_->policyPath().string()), std::string::npos);
}

TEST_F(ControlPrivilegedTest, WithoutAControlGroupOnlyRootMayUseTheSocket) {
  startAgent();

  auto run = ctl({"workloads"}, {"setpriv", kUnprivileged, "--regid=65534", "--clear-groups"});

  EXPECT_EQ(run.status, 1);
  EXPECT_EQ(run.err, "microsegctl: permission denied on " + agent_->controlSocket() +
                         ": run as root (the agent lets no group in; start it with "
                         "--control-group GROUP to allow one)\n");
}

// A socket the group may use, in a directory that lets only root in: the member is told that
// the directory is the obstacle, not the socket or the group.
TEST_F(ControlPrivilegedTest, MemberKeptOutByTheSocketsDirectoryIsToldWhichAndItsMode) {
  const fs::path directory = agent_->workDir() / "private";
  fs::create_directories(directory);
  ASSERT_EQ(chmod(directory.c_str(), 0700), 0);
  const std::string socket = (directory / "ctl.sock").string();
  agent_->addArguments({"--control-group", "nogroup", "--control-socket", socket});
  startAgent();

  auto run = runCommand({"setpriv", kUnprivileged, "--regid=65534", "--clear-groups",
                         MSEG_MICROSEGCTL, "status", "--socket", socket}, 30s);

  ASSERT_TRUE(run);
  EXPECT_EQ(run->status, 1);
  EXPECT_EQ(run->err, "microsegctl: permission denied on " + socket + ": directory " +
                          directory.string() + " (mode 0700, owner root, group root) does not let "
                          "you reach the socket; run as root, or make the directory searchable "
                          "for the agent's control group (chgrp GROUP " + directory.string() +
                          "; chmod g+x " + directory.string() + ")\n");
}

// The smallest capability set has no CAP_CHOWN: a control group needs it, and says so.
TEST_F(ControlPrivilegedTest, ControlGroupWithoutCapChownFailsTheStartNamingIt) {
  agent_->addArguments({"--control-group", "nogroup"});
  const std::vector<std::string> minimal = {"setpriv", "--bounding-set",
                                            "-all,+bpf,+net_admin,+perfmon", "--inh-caps", "-all",
                                            "--"};

  auto refused = agent_->launch(minimal);
  ASSERT_TRUE(refused);
  auto status = refused->wait(20s);
  std::vector<std::string> with_chown = minimal;
  with_chown[2] = "-all,+bpf,+net_admin,+perfmon,+chown";

  ASSERT_TRUE(status);
  EXPECT_EQ(*status, 1);
  EXPECT_NE(refused->err().find("give control socket " + agent_->controlSocket() +
                                " to group nogroup (--control-group needs CAP_CHOWN)"),
            std::string::npos) << refused->err();
  EXPECT_FALSE(fs::exists(agent_->pinDir())) << "refused before the kernel was touched";
  ASSERT_TRUE(agent_->start(with_chown));
  EXPECT_EQ(ctl({"status"}).status, 0);
}

TEST_F(ControlPrivilegedTest, StoppedAgentLeavesNoSocketAndCallersAreToldSo) {
  startAgent();
  ASSERT_EQ(ctl({"status"}).status, 0);
  ::kill(agent_->process()->pid(), SIGTERM);
  ASSERT_TRUE(pollUntil(10s, [&] { return !fs::exists(agent_->controlSocket()); }));

  auto run = ctl({"status"});

  EXPECT_EQ(run.status, 1);
  EXPECT_EQ(run.err, "microsegctl: no agent at " + agent_->controlSocket() +
                         " (is microsegd running? --socket to choose another)\n");
}

// A killed agent cannot mark its status file stopped: microsegctl checks the pid it names, and
// says what still enforces.
TEST_F(ControlPrivilegedTest, StatusWithoutAgentSaysTheLastOneIsNotRunningAndWhatEnforces) {
  startAgent();
  const int pid = agent_->process()->pid();
  const std::string state_dir = (agent_->workDir() / "state").string();
  const std::string config =
      writeFile("microsegd.yaml", "policy: " + agent_->policyPath().string() +
                                      "\nstate_dir: " + state_dir + "\npin_dir: " +
                                      agent_->pinDir() + "\ncontrol_socket: " +
                                      agent_->controlSocket() + "\n");
  agent_->crash();

  auto run = runCommand({MSEG_MICROSEGCTL, "status", "--config", config}, 30s);

  ASSERT_TRUE(run);
  EXPECT_EQ(run->status, 1);
  EXPECT_NE(run->err.find("microsegctl: no agent at " + agent_->controlSocket()),
            std::string::npos) << run->err;
  EXPECT_NE(run->err.find("microsegctl: microsegd pid " + std::to_string(pid) + ", which wrote " +
                          state_dir + "/status.json, is not running (it was killed or "
                          "crashed); its programs pinned in " + agent_->pinDir() +
                          " keep enforcing policy version 1 (sha256 "),
            std::string::npos) << run->err;
}

// The agent creates the missing parents of its pin directory; uninstall removes those it
// created, each only while empty, and never one that was there before.
TEST_F(ControlPrivilegedTest, UninstallRemovesThePinDirectoryParentsTheAgentCreated) {
  const fs::path existing = fs::path("/sys/fs/bpf") / uniqueName();
  ASSERT_TRUE(fs::create_directory(existing));
  struct RemoveAtEnd {
    fs::path path;
    ~RemoveAtEnd() {
      std::error_code ignored;
      fs::remove_all(path, ignored);
    }
  } remove_existing{existing};
  const fs::path alone = existing / "a" / "b" / "pins";
  const fs::path shared = existing / "c" / "d" / "pins";
  auto runAgentWith = [&](const fs::path& pin_dir) {
    agent_->usePinDir(pin_dir.string());
    EXPECT_TRUE(agent_->start());
    EXPECT_TRUE(agent_->stop());
  };

  runAgentWith(alone);
  auto alone_removed = runCommand({MSEG_MICROSEGCTL, "uninstall", "--pin-dir", alone.string()});
  runAgentWith(shared);
  ASSERT_TRUE(fs::create_directory(existing / "c" / "other"));  // not the agent's
  auto shared_removed = runCommand({MSEG_MICROSEGCTL, "uninstall", "--pin-dir", shared.string()});

  ASSERT_TRUE(alone_removed && shared_removed);
  EXPECT_EQ(alone_removed->status, 0) << alone_removed->err;
  EXPECT_EQ(shared_removed->status, 0) << shared_removed->err;
  EXPECT_FALSE(fs::exists(existing / "a")) << "created by the agent and empty";
  EXPECT_FALSE(fs::exists(existing / "c" / "d")) << "created by the agent and empty";
  EXPECT_TRUE(fs::exists(existing / "c" / "other")) << "not the agent's";
  EXPECT_TRUE(fs::exists(existing)) << "there before the agent";
}

TEST_F(ControlPrivilegedTest, RestartAfterACrashTakesOverTheStaleSocket) {
  startAgent();
  agent_->crash();
  ASSERT_TRUE(fs::exists(agent_->controlSocket()));
  EXPECT_EQ(ctl({"status"}).status, 1);

  startAgent();

  EXPECT_EQ(ctl({"status"}).status, 0);
}

TEST_F(ControlPrivilegedTest, SecondAgentOnTheSameSocketIsRefusedBeforeTouchingTheKernel) {
  startAgent();
  const std::string other_pins = agent_->pinDir() + "-second";

  auto second = Subprocess::start({MSEG_MICROSEGD, "--policy", agent_->policyPath().string(),
                                   "--cgroup", cgroup_->path("other.scope").string(),
                                   "--pin-dir", other_pins, "--state-dir",
                                   (agent_->workDir() / "second").string(), "--control-socket",
                                   agent_->controlSocket()});
  ASSERT_TRUE(second);
  auto status = second->wait(20s);

  ASSERT_TRUE(status);
  EXPECT_EQ(*status, 1);
  EXPECT_NE(second->err().find("another microsegd serves the control socket " +
                               agent_->controlSocket()),
            std::string::npos) << second->err();
  EXPECT_FALSE(fs::exists(other_pins));
  EXPECT_EQ(ctl({"status"}).status, 0);
}

}  // namespace
}  // namespace mseg::testing
