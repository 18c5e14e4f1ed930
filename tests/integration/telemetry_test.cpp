// Flow telemetry end to end: real traffic between two namespaces, the real agent, and the OCSF
// records it writes to its flow log, checked the way a SIEM user reads them.
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "two_hosts.hpp"

namespace mseg::testing {
namespace {

using Json = nlohmann::json;

constexpr int kActivityOpen = 1;
constexpr int kActivityClose = 2;
constexpr int kActivityRefuse = 5;

// A 256 KiB tmpfs of this test's own under /tmp, to fill up: a disk that runs full. Unmounted
// and removed again by the destructor, also when the test fails.
class SmallDisk {
public:
  SmallDisk() : path_(std::filesystem::temp_directory_path() /
                      ("mseg-small-disk-" + std::to_string(getpid()))) {
    std::filesystem::create_directories(path_);
    mounted_ = mount("mseg-small-disk", path_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV,
                     "size=256k,mode=0700") == 0;
    EXPECT_TRUE(mounted_) << "mount a tmpfs on " << path_ << ": " << std::strerror(errno);
  }
  ~SmallDisk() {
    if (mounted_) {
      umount2(path_.c_str(), MNT_DETACH);
    }
    std::error_code err;
    std::filesystem::remove_all(path_, err);
  }
  SmallDisk(const SmallDisk&) = delete;
  SmallDisk& operator=(const SmallDisk&) = delete;

  const std::filesystem::path& path() const { return path_; }

  // Writes a filler file until the disk is full, then gives `spare_bytes` back.
  void fill(size_t spare_bytes) const {
    const std::string chunk(4096, 'f');
    {
      std::ofstream filler(fillerPath(), std::ios::binary);
      while (filler.write(chunk.data(), static_cast<std::streamsize>(chunk.size()))) {
      }
    }
    const auto size = std::filesystem::file_size(fillerPath());
    std::filesystem::resize_file(fillerPath(), size > spare_bytes ? size - spare_bytes : 0);
  }
  void freeSpace() const { std::filesystem::remove(fillerPath()); }

private:
  std::filesystem::path fillerPath() const { return path_ / "filler"; }

  std::filesystem::path path_;
  bool mounted_ = false;
};

std::vector<std::string> linesOf(const std::filesystem::path& file) {
  std::vector<std::string> lines;
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);) {
    lines.push_back(line);
  }
  return lines;
}

class TelemetryPrivilegedTest : public TwoHostTest {
protected:
  std::vector<Json> records() const {
    std::vector<Json> parsed;
    for (const auto& line : agent_->flowLogLines()) {
      parsed.push_back(Json::parse(line));
    }
    return parsed;
  }

  // Records of one activity whose destination port is `port`, direction "Outbound" for the
  // client's egress or "Inbound" for the server's ingress.
  std::vector<Json> matching(int activity, int port, const std::string& direction) const {
    std::vector<Json> found;
    for (const auto& record : records()) {
      if (record["activity_id"] == activity && record["dst_endpoint"].value("port", -1) == port &&
          record["connection_info"]["direction"] == direction) {
        found.push_back(record);
      }
    }
    return found;
  }

  // Starts the agent with a Prometheus endpoint on loopback, read by metric().
  void startAgentWithMetrics() {
    metrics_port_ = static_cast<uint16_t>(20000 + getpid() % 20000);
    agent_->addArguments({"--metrics-listen", "127.0.0.1:" + std::to_string(metrics_port_)});
    startAgent();
  }

  // One unlabelled sample from the agent's metrics endpoint, or -1 when it cannot be read.
  double metric(const std::string& name) const {
    const std::string url = "http://127.0.0.1:" + std::to_string(metrics_port_) + "/metrics";
    auto scraped = runCommand({"curl", "-sf", url}, 5s);
    if (!scraped || scraped->status != 0) {
      return -1;
    }
    const std::string prefix = "\n" + name + " ";
    const size_t at = scraped->out.find(prefix);
    return at == std::string::npos ? -1 : std::stod(scraped->out.substr(at + prefix.size()));
  }

  uint16_t metrics_port_ = 0;

  // Waits until `count` records match.
  std::vector<Json> awaitMatching(int activity, int port, const std::string& direction,
                                  size_t count = 1) const {
    std::vector<Json> found;
    pollUntil(10s, [&] {
      found = matching(activity, port, direction);
      return found.size() >= count;
    }, 50ms);
    return found;
  }
};

TEST_F(TelemetryPrivilegedTest, TcpConnectionReportsStartAndEndWithBytesSent) {
  serveTcp(7001);
  startAgent();
  const std::string payload(3000, 'x');

  auto status = runIn(client(), [&] { return tcpSendRecv(kServer4, 7001, payload, kQuick); });
  ASSERT_TRUE(status);
  ASSERT_EQ(*status, 0);

  auto started = awaitMatching(kActivityOpen, 7001, "Outbound");
  ASSERT_EQ(started.size(), 1u);
  EXPECT_EQ(started[0]["src_endpoint"]["ip"], kClient4);
  EXPECT_EQ(started[0]["dst_endpoint"]["ip"], kServer4);
  EXPECT_EQ(started[0]["action"], "Allowed");
  EXPECT_EQ(started[0]["firewall_rule"]["name"], "app/client-to-server-tcp");
  EXPECT_FALSE(started[0]["actor"]["process"]["name"].get<std::string>().empty());

  auto ended = awaitMatching(kActivityClose, 7001, "Outbound");
  ASSERT_EQ(ended.size(), 1u);
  EXPECT_EQ(ended[0]["traffic"]["bytes_out"], payload.size());
  EXPECT_EQ(ended[0]["traffic"]["bytes_in"], payload.size());
  EXPECT_EQ(ended[0]["metadata"]["correlation_uid"], started[0]["metadata"]["correlation_uid"]);
}

// A rule added by a live change is named in the records of the flows it allows, from the
// first one on, although the change enforces before the agent has compiled it in full.
TEST_F(TelemetryPrivilegedTest, RuleAddedByALiveChangeNamesItsFirstFlows) {
  serveTcp(7002);
  startAgent();
  const uint64_t version = *agent_->policyVersion();
  std::string added = kPolicy;
  added.replace(added.find("      - name: client-to-server-udp"), 0,
                "      - {name: late-tcp, from: {role: client}, to: {role: server}, "
                "protocol: tcp, ports: [7002]}\n");
  const auto staged = agent_->policyPath().string() + ".new";
  std::ofstream(staged) << added;
  std::filesystem::rename(staged, agent_->policyPath());
  ASSERT_TRUE(pollUntil(10s, [&] { return agent_->policyVersion().value_or(0) > version; }));

  ASSERT_EQ(connectFrom(client(), kServer4, 7002), 0);

  auto started = awaitMatching(kActivityOpen, 7002, "Outbound");
  ASSERT_EQ(started.size(), 1u);
  EXPECT_EQ(started[0]["action"], "Allowed");
  EXPECT_EQ(started[0]["firewall_rule"]["name"], "app/late-tcp");
}

TEST_F(TelemetryPrivilegedTest, ServerSideReportsTheAcceptedConnection) {
  serveTcp(7001);
  startAgent();
  const std::string payload(1234, 'y');

  auto status = runIn(client(), [&] { return tcpSendRecv(kServer4, 7001, payload, kQuick); });
  ASSERT_TRUE(status);
  ASSERT_EQ(*status, 0);

  auto ended = awaitMatching(kActivityClose, 7001, "Inbound");
  ASSERT_EQ(ended.size(), 1u);
  EXPECT_EQ(ended[0]["src_endpoint"]["ip"], kClient4);
  // OCSF counts from the source: the client sent the payload and got it back.
  EXPECT_EQ(ended[0]["traffic"]["bytes_out"], payload.size());
  EXPECT_EQ(ended[0]["traffic"]["bytes_in"], payload.size());
  EXPECT_EQ(ended[0]["unmapped"]["workload"]["name"], "server");
}

TEST_F(TelemetryPrivilegedTest, Ipv6ConnectionCarriesIpv6Addresses) {
  serveTcp(7001);
  startAgent();

  ASSERT_EQ(connectFrom(client(), kServer6, 7001), 0);

  auto started = awaitMatching(kActivityOpen, 7001, "Outbound");
  ASSERT_EQ(started.size(), 1u);
  EXPECT_EQ(started[0]["dst_endpoint"]["ip"], kServer6);
  EXPECT_EQ(started[0]["connection_info"]["protocol_ver_id"], 6);
}

TEST_F(TelemetryPrivilegedTest, RepeatedDeniedAttemptsAreAggregated) {
  startAgent();

  for (int attempt = 0; attempt < 5; attempt++) {
    ASSERT_EQ(connectFrom(client(), kServer4, 7002), EPERM);
  }

  uint64_t attempts = 0;
  std::vector<Json> denied;
  ASSERT_TRUE(pollUntil(10s, [&] {
    denied = matching(kActivityRefuse, 7002, "Outbound");
    attempts = 0;
    for (const auto& record : denied) {
      attempts += record["count"].get<uint64_t>();
    }
    return attempts >= 5;
  }, 50ms));
  EXPECT_EQ(attempts, 5u);
  EXPECT_LE(denied.size(), 2u) << "one event for the first attempt, one summary for the rest";
  EXPECT_EQ(denied[0]["disposition"], "Blocked");
  EXPECT_EQ(denied[0]["firewall_rule"]["name"], "(default deny)");
}

TEST_F(TelemetryPrivilegedTest, AuditVerdictIsRecordedAsWouldDeny) {
  serveTcp(7160);
  startAgent();

  ASSERT_EQ(connectFrom(client(), kServer4, 7160), 0);

  auto started = awaitMatching(kActivityOpen, 7160, "Outbound");
  ASSERT_EQ(started.size(), 1u);
  EXPECT_EQ(started[0]["action"], "Allowed");
  EXPECT_EQ(started[0]["unmapped"]["verdict"], "audit");
  EXPECT_EQ(started[0]["unmapped"]["would_deny"], true);
  EXPECT_EQ(started[0]["firewall_rule"]["name"], "watch/client-debug");
}

TEST_F(TelemetryPrivilegedTest, UdpFlowEndsAfterIdleTimeoutWithPayloadBytes) {
  serveUdp(7001);
  const auto config = agent_->workDir() / "agent.yaml";
  std::ofstream(config) << "udp_idle_timeout: 1\n";
  agent_->addArguments({"--config", config.string()});
  startAgent();

  auto status = runIn(client(), [&] { return udpSendRecv(kServer4, 7001, "hello", kQuick); });
  ASSERT_TRUE(status);
  ASSERT_EQ(*status, 0);

  auto ended = awaitMatching(kActivityClose, 7001, "Outbound");
  ASSERT_EQ(ended.size(), 1u);
  EXPECT_EQ(ended[0]["connection_info"]["protocol_name"], "udp");
  EXPECT_EQ(ended[0]["traffic"]["bytes_out"], 5u);
  EXPECT_EQ(ended[0]["traffic"]["bytes_in"], 5u);
  EXPECT_EQ(ended[0]["traffic"]["packets_out"], 1u);
}

// A connect() port scan from the client workload is refused port by port and aggregated in the
// kernel, so it cannot crowd the ring buffer: every allowed connection made during the scan is
// still recorded and no event is lost.
TEST_F(TelemetryPrivilegedTest, PortScanLosesNoOtherFlows) {
  serveTcp(7001);
  startAgent();
  constexpr int kConnections = 30;

  auto scan = Subprocess::start({"nmap", "-sT", "-Pn", "-n", "-p", "1-4000", "--max-retries",
                                 "0", "-T5", kServer4},
                                client());
  ASSERT_TRUE(scan) << scan.error().message();
  for (int i = 0; i < kConnections; i++) {
    ASSERT_EQ(connectFrom(client(), kServer4, 7001), 0);
  }
  auto scanned = scan->wait(120s);
  ASSERT_TRUE(scanned);

  auto ended = awaitMatching(kActivityClose, 7001, "Outbound", kConnections);
  EXPECT_EQ(ended.size(), static_cast<size_t>(kConnections));
  auto counters = agent_->counters();
  ASSERT_TRUE(counters);
  EXPECT_EQ(counters->reasons[MSEG_REASON_EVENT_LOST], 0u);
  uint64_t refused = 0;
  pollUntil(5s, [&] {
    refused = 0;
    for (const auto& record : records()) {
      if (record["activity_id"] == kActivityRefuse) {
        refused += record["count"].get<uint64_t>();
      }
    }
    return refused >= 3998;
  }, 100ms);
  EXPECT_GE(refused, 3998u) << "every refused port of the scan is accounted for";
}

// Telemetry off: the datapath enforces and counts per rule, but leaves nothing to report, not
// even in its pinned ring buffer or denial table, where an agent started later with telemetry
// on would find it. That agent adopts the pinned programs and records flows again.
TEST_F(TelemetryPrivilegedTest, TelemetryOffEnforcesWithoutRecordsUntilTurnedBackOn) {
  serveTcp(7001);
  serveTcp(7101);
  const auto config = agent_->workDir() / "agent.yaml";
  std::ofstream(config) << "telemetry: off\n";
  agent_->addArguments({"--config", config.string()});
  startAgent();

  ASSERT_EQ(connectFrom(client(), kServer4, 7001), 0);
  ASSERT_EQ(connectFrom(client(), kServer4, 7002), EPERM);

  EXPECT_EQ(agent_->ruleHits("app/client-to-server-tcp"), 2u)
      << "judged at the client's egress and at the server's ingress";
  EXPECT_EQ(agent_->ruleHits("(default deny)"), 1u);
  EXPECT_TRUE(agent_->flowLogLines().empty());
  const std::string sockops_link = agent_->pinDir() + "/link_mseg_sockops";
  EXPECT_FALSE(std::filesystem::exists(sockops_link)) << "sock_ops has nothing to do: detached";

  agent_->crash();
  std::ofstream(config, std::ios::trunc) << "telemetry: on\n";
  startAgent();
  EXPECT_TRUE(std::filesystem::exists(sockops_link));
  ASSERT_EQ(connectFrom(client(), kServer4, 7101), 0);

  EXPECT_EQ(awaitMatching(kActivityClose, 7101, "Outbound").size(), 1u);
  EXPECT_EQ(awaitMatching(kActivityClose, 7101, "Inbound").size(), 1u);
  for (const auto& record : records()) {
    EXPECT_EQ(record["dst_endpoint"].value("port", -1), 7101)
        << "only the connection made with telemetry on is recorded: " << record.dump();
  }
}

// A disk that runs full under the flow log: every record that misses the file is counted as
// dropped, the file holds whole lines only (the one cut short by the full disk is removed), and
// records reach the file again once space is freed.
TEST_F(TelemetryPrivilegedTest, FullDiskCountsLostRecordsLeavesNoTornLineAndRecovers) {
  SmallDisk disk;
  const auto flow_log = disk.path() / "flows.ocsf.jsonl";
  // One page (tmpfs counts whole pages): room for a few lines, and the next one is cut short.
  disk.fill(4096);
  serveTcp(7001);
  serveTcp(7101);
  agent_->addArguments({"--flow-log", flow_log.string()});
  startAgentWithMetrics();

  for (int connection = 0; connection < 5; connection++) {
    ASSERT_EQ(connectFrom(client(), kServer4, 7001), 0);
  }
  // At least a start and an end record a connection; every one either in the file or counted
  // as dropped, and the exported count is the file's line count.
  double dropped = 0;
  double exported = 0;
  std::vector<std::string> lines;
  EXPECT_TRUE(pollUntil(10s, [&] {
    dropped = metric("microseg_flow_records_dropped_total");
    exported = metric("microseg_flow_records_total");
    lines = linesOf(flow_log);
    return dropped > 0 && dropped + exported >= 10 &&
           static_cast<double>(lines.size()) == exported;
  }, 200ms)) << "dropped=" << dropped << " exported=" << exported << " lines=" << lines.size();

  EXPECT_GT(exported, 0) << "the space left held whole lines";
  for (const auto& line : lines) {
    EXPECT_TRUE(Json::accept(line)) << "a torn line is left in the flow log: " << line;
  }

  disk.freeSpace();
  ASSERT_EQ(connectFrom(client(), kServer4, 7101), 0);

  bool recovered = pollUntil(10s, [&] {
    for (const auto& line : linesOf(flow_log)) {
      const auto record = Json::parse(line, nullptr, false);
      if (record.is_object() && record["activity_id"] == kActivityClose &&
          record["dst_endpoint"].value("port", -1) == 7101) {
        return true;
      }
    }
    return false;
  }, 100ms);
  EXPECT_TRUE(recovered) << "records reach the flow log once space is freed";
  EXPECT_EQ(metric("microseg_flow_records_dropped_total"), dropped) << "nothing lost any more";
  for (const auto& line : linesOf(flow_log)) {
    EXPECT_TRUE(Json::accept(line)) << "a torn line is left in the flow log: " << line;
  }
}

// Without a collector the agent numbers its records itself; a restarted agent appending to the
// same flow log must not reuse the ids a SIEM deduplicates on.
TEST_F(TelemetryPrivilegedTest, RecordIdsStayUniqueAcrossAgentRestarts) {
  serveTcp(7001);
  serveTcp(7101);
  startAgent();
  ASSERT_EQ(connectFrom(client(), kServer4, 7001), 0);
  ASSERT_EQ(awaitMatching(kActivityClose, 7001, "Outbound").size(), 1u);
  auto stopped = agent_->stop();
  ASSERT_TRUE(stopped);
  ASSERT_EQ(*stopped, 0);

  startAgent();
  ASSERT_EQ(connectFrom(client(), kServer4, 7101), 0);
  ASSERT_EQ(awaitMatching(kActivityClose, 7101, "Outbound").size(), 1u);

  std::set<std::string> seen;
  const auto all = records();
  for (const auto& record : all) {
    const auto uid = record["metadata"].value("uid", "");
    EXPECT_FALSE(uid.empty()) << record.dump();
    EXPECT_TRUE(seen.insert(uid).second) << "record id " << uid << " repeats";
  }
  EXPECT_GE(all.size(), 4u) << "records of both agents are in the flow log";
}

}  // namespace
}  // namespace mseg::testing
