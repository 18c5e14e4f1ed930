// Agent to collector to SIEM, end to end: real traffic between two namespaces, the real
// microsegd streaming over mutual TLS to the real microseg-collector, which writes OCSF files
// and feeds a real rsyslog over TCP (CEF) and TLS (JSON). Faults: the collector away for a
// while, the agent killed, an agent certificate that names another host, a wrong --host
// corrected.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "collector_client.hpp"
#include "rsyslog_server.hpp"
#include "spool.hpp"
#include "test_pki.hpp"
#include "two_hosts.hpp"

namespace mseg::testing {
namespace {

using Json = nlohmann::json;
using collector::testing::RsyslogServer;
using collector::testing::TestPki;

constexpr const char* kHost = "host-a";

uint16_t freeLoopbackPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  socklen_t length = sizeof(address);
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  close(fd);
  return ntohs(address.sin_port);
}

class ExportPrivilegedTest : public TwoHostTest {
protected:
  void SetUp() override {
    TwoHostTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) {
      return;
    }
    dir_ = agent_->workDir() / "export";
    auto pki = TestPki::create(dir_ / "pki");
    ASSERT_TRUE(pki) << pki.error().message();
    pki_.emplace(std::move(*pki));
    port_ = freeLoopbackPort();
  }

  void TearDown() override {
    collector_.reset();
    rsyslog_.reset();
    TwoHostTest::TearDown();
  }

  // The agent streams to the collector as `host`, with the certificate issued for `cert_host`.
  void useCollector(const std::string& host = kHost, const std::string& cert_host = kHost) {
    auto cert = pki_->agent(cert_host);
    agent_->addArguments({"--collector", "127.0.0.1:" + std::to_string(port_), "--collector-ca",
                          pki_->caCert().string(), "--tls-cert", cert.cert.string(),
                          "--tls-key", cert.key.string(), "--host", host});
  }

  void startCollector(bool with_syslog = false) {
    std::ofstream config(dir_ / "collector.yaml", std::ios::trunc);
    config << "listen: 127.0.0.1:" << port_ << "\n"
           << "tls: {cert: " << pki_->server().cert.string()
           << ", key: " << pki_->server().key.string()
           << ", client_ca: " << pki_->caCert().string() << "}\n"
           << "state_dir: " << (dir_ / "collector-state").string() << "\n"
           << "outputs:\n"
           << "  - {type: ocsf_file, path: " << outputPath().string() << "}\n";
    if (with_syslog) {
      config << "  - {type: syslog, transport: tcp, host: 127.0.0.1, port: "
             << rsyslog_->tcpPort() << ", payload: cef}\n"
             << "  - {type: syslog, transport: tls, host: 127.0.0.1, port: "
             << rsyslog_->tlsPort() << ", payload: json, ca: " << pki_->caCert().string()
             << "}\n";
    }
    config.close();
    auto started = Subprocess::start(
        {MSEG_COLLECTOR_BINARY, "--config", (dir_ / "collector.yaml").string()});
    ASSERT_TRUE(started) << started.error().message();
    collector_.emplace(std::move(*started));
    ASSERT_TRUE(pollUntil(10s, [&] {
      return connectFrom({}, "127.0.0.1", port_) == 0;
    })) << collector_->err();
  }

  // Stops the collector with SIGTERM, as systemd would, and returns what it logged.
  std::string stopCollector() {
    ::kill(collector_->pid(), SIGTERM);
    (void)collector_->wait(10s);
    std::string log = collector_->err();
    collector_.reset();
    return log;
  }

  std::filesystem::path outputPath() const { return dir_ / "collector-out/flows.ocsf.jsonl"; }

  std::vector<Json> stored() const {
    std::vector<Json> records;
    std::ifstream file(outputPath());
    for (std::string line; std::getline(file, line);) {
      records.push_back(Json::parse(line));
    }
    return records;
  }

  // Stored records of one OCSF activity for the client's connections to `port`.
  size_t countStored(int activity, int port) const {
    size_t count = 0;
    for (const auto& record : stored()) {
      if (record["activity_id"] == activity && record["dst_endpoint"].value("port", -1) == port &&
          record["connection_info"]["direction"] == "Outbound") {
        count++;
      }
    }
    return count;
  }

  void connectTimes(int times) {
    for (int i = 0; i < times; i++) {
      ASSERT_EQ(connectFrom(client(), kServer4, 7001), 0);
    }
  }

  // Every stored record once: unique record ids, and per agent increasing sequences.
  void expectNoDuplicates() const {
    std::set<std::string> ids;
    for (const auto& record : stored()) {
      const std::string id = record["metadata"]["uid"];
      EXPECT_TRUE(ids.insert(id).second) << "stored twice: " << id;
    }
  }

  std::filesystem::path dir_;
  std::optional<TestPki> pki_;
  std::optional<Subprocess> collector_;
  std::optional<RsyslogServer> rsyslog_;
  uint16_t port_ = 0;
};

constexpr int kOpen = 1;
constexpr int kClose = 2;

TEST_F(ExportPrivilegedTest, FlowsReachCollectorFilesAndRsyslogOverTcpAndTls) {
  auto rsyslog = RsyslogServer::start(dir_ / "rsyslog", pki_->caCert(), pki_->server().cert,
                                      pki_->server().key);
  ASSERT_TRUE(rsyslog) << rsyslog.error().message();
  rsyslog_.emplace(std::move(*rsyslog));
  startCollector(true);
  serveTcp(7001);
  useCollector();
  startAgent();

  auto status = runIn(client(), [&] { return tcpSendRecv(kServer4, 7001, "payload!", kQuick); });
  ASSERT_TRUE(status);
  ASSERT_EQ(*status, 0);

  ASSERT_TRUE(pollUntil(15s, [&] { return countStored(kClose, 7001) == 1; }, 100ms));
  for (const auto& record : stored()) {
    EXPECT_EQ(record["device"]["hostname"], kHost);
  }
  // Client start and end, server start and end: four records to each syslog input.
  ASSERT_TRUE(rsyslog_->waitForTcp(4, 15s));
  ASSERT_TRUE(rsyslog_->waitForTls(4, 15s));
  std::set<std::string> msgids;
  for (const auto& message : rsyslog_->receivedOverTcp()) {
    EXPECT_EQ(message.hostname, kHost);
    EXPECT_EQ(message.msg.rfind("CEF:0|microseg|", 0), 0u) << message.msg;
    msgids.insert(message.msgid);
  }
  EXPECT_EQ(msgids, (std::set<std::string>{"flow-start", "flow-end"}));
  for (const auto& message : rsyslog_->receivedOverTls()) {
    EXPECT_EQ(Json::parse(message.msg)["class_uid"], 4001);
  }
}

TEST_F(ExportPrivilegedTest, CollectorAwayForAWhileLosesAndDuplicatesNothing) {
  startCollector();
  serveTcp(7001);
  useCollector();
  startAgent();
  connectTimes(3);
  ASSERT_TRUE(pollUntil(15s, [&] { return countStored(kClose, 7001) == 3; }, 100ms));

  stopCollector();
  connectTimes(5);
  std::this_thread::sleep_for(2s);  // the agent spools while the collector is away
  startCollector();

  ASSERT_TRUE(pollUntil(20s, [&] { return countStored(kClose, 7001) == 8; }, 100ms));
  EXPECT_EQ(countStored(kOpen, 7001), 8u);
  expectNoDuplicates();
}

TEST_F(ExportPrivilegedTest, KilledAgentResumesFromItsSpoolWithoutDuplicates) {
  startCollector();
  serveTcp(7001);
  useCollector();
  startAgent();
  connectTimes(3);
  ASSERT_TRUE(pollUntil(15s, [&] { return countStored(kClose, 7001) == 3; }, 100ms));

  stopCollector();
  connectTimes(2);
  std::this_thread::sleep_for(1500ms);  // spooled and synced, not yet delivered
  agent_->crash();
  startAgent();
  startCollector();
  connectTimes(2);

  ASSERT_TRUE(pollUntil(20s, [&] { return countStored(kClose, 7001) == 7; }, 100ms));
  EXPECT_EQ(countStored(kOpen, 7001), 7u);
  expectNoDuplicates();
}

TEST_F(ExportPrivilegedTest, AgentClaimingAnotherHostIsRefused) {
  startCollector();
  serveTcp(7001);
  useCollector(kHost, "host-b");
  startAgent();

  connectTimes(2);
  std::this_thread::sleep_for(3s);

  EXPECT_TRUE(stored().empty()) << "records of host-a sent with host-b's certificate";
  const std::string log = stopCollector();
  EXPECT_NE(log.find("record of another host refused"), std::string::npos) << log;
}

TEST_F(ExportPrivilegedTest, RecordsSpooledUnderAWrongHostArriveOnceTheHostIsCorrected) {
  startCollector();
  serveTcp(7001);
  useCollector("erp-db-1", kHost);
  startAgent();
  connectTimes(2);
  std::this_thread::sleep_for(3s);  // spooled under erp-db-1 and refused
  ASSERT_TRUE(stored().empty()) << "records claiming erp-db-1 stored for host-a's certificate";

  ASSERT_TRUE(agent_->stop());
  agent_->addArguments({"--host", kHost});
  startAgent();
  connectTimes(1);

  ASSERT_TRUE(pollUntil(20s, [&] { return countStored(kClose, 7001) == 3; }, 100ms));
  EXPECT_EQ(countStored(kOpen, 7001), 3u);
  for (const auto& record : stored()) {
    EXPECT_EQ(record["device"]["hostname"], kHost);
  }
  expectNoDuplicates();
}

// A key of another certificate, or a certificate and key given the wrong way round, would
// fail every handshake later with gRPC's words; the start fails instead, naming both files,
// before the kernel is touched.
TEST_F(ExportPrivilegedTest, KeyThatDoesNotBelongToTheCertificateFailsTheStartNamingBoth) {
  const auto own = pki_->agent(kHost);
  const auto other = pki_->agent("host-b");
  const std::string collector = "127.0.0.1:" + std::to_string(port_);
  using collector::testing::CertFiles;
  const std::vector<std::pair<CertFiles, std::vector<std::string>>> cases = {
      {{own.cert, other.key},
       {"--tls-key " + other.key.string() + " does not belong to the certificate in --tls-cert " +
        own.cert.string()}},
      {{own.key, own.cert},
       {"--tls-cert " + own.key.string() + ": holds no PEM certificate",
        "--tls-key " + own.cert.string() + ": holds no PEM private key"}},
  };

  for (const auto& [files, says] : cases) {
    agent_->clearArguments();
    agent_->addArguments({"--collector", collector, "--collector-ca", pki_->caCert().string(),
                          "--tls-cert", files.cert.string(), "--tls-key", files.key.string(),
                          "--host", kHost});
    auto refused = agent_->launch();
    ASSERT_TRUE(refused);
    auto status = refused->wait(20s);

    ASSERT_TRUE(status);
    EXPECT_EQ(*status, 1);
    for (const auto& words : says) {
      EXPECT_NE(refused->err().find("cannot start: "), std::string::npos) << refused->err();
      EXPECT_NE(refused->err().find(words), std::string::npos) << refused->err();
    }
    EXPECT_EQ(refused->err().find("Invalid private key"), std::string::npos) << refused->err();
    EXPECT_FALSE(std::filesystem::exists(agent_->pinDir()));
  }
}

TEST_F(ExportPrivilegedTest, ExporterWithAnExpiredCertificateCountsItsFailedAttempts) {
  startCollector();
  auto spool = agent::Spool::open((dir_ / "spool").string(), 1 << 20);
  ASSERT_TRUE(spool) << spool.error().message();
  microseg::telemetry::v1::FlowRecord record;
  (*spool)->append(record, kHost);
  ASSERT_TRUE((*spool)->sync());
  const auto expired = pki_->expiredAgent();
  auto client = agent::CollectorClient::create({"127.0.0.1:" + std::to_string(port_),
                                                pki_->caCert().string(), expired.cert.string(),
                                                expired.key.string(), "", kHost},
                                               **spool);
  ASSERT_TRUE(client) << client.error().message();

  (*client)->start();

  EXPECT_TRUE(pollUntil(15s, [&] { return (*client)->failedAttempts() >= 3; }, 100ms));
  EXPECT_FALSE((*client)->connected());
  EXPECT_EQ((*spool)->pendingRecords(), 1u) << "the record stays spooled";
  (*client)->stop();
}

}  // namespace
}  // namespace mseg::testing
