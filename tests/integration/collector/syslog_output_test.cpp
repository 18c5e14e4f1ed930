// The syslog output against a real rsyslogd on loopback: CEF and OCSF JSON payloads in RFC
// 5424 messages with octet-counting framing, over TCP and over TLS, end to end from an agent's
// stream; plus reconnection and the bounded queue. No root needed.
#include "mseg/collector/syslog_output.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <set>

#include "agent_client.hpp"
#include "collector_testing.hpp"
#include "mseg/collector/collector.hpp"
#include "rsyslog_server.hpp"
#include "support/poll.hpp"
#include "support/subprocess.hpp"
#include "test_pki.hpp"

namespace mseg::collector {
namespace {

using testing::AgentStream;
using testing::makeBatch;
using testing::readPem;
using testing::ReceivedMessage;
using testing::RsyslogServer;
using ::testing::StartsWith;
using testing::TempDir;

constexpr std::chrono::seconds kDeliveryTimeout{20};

// The record ids the messages carry: CEF's externalId, OCSF JSON's metadata.uid.
std::multiset<std::string> recordIds(const std::vector<ReceivedMessage>& messages) {
  std::multiset<std::string> ids;
  for (const auto& message : messages) {
    if (message.msg.starts_with("CEF:0|")) {
      auto start = message.msg.find("externalId=");
      auto end = message.msg.find(' ', start);
      if (start != std::string::npos) {
        ids.insert(message.msg.substr(start + 11, end - start - 11));
      }
    } else {
      auto event = nlohmann::json::parse(message.msg, nullptr, false);
      ids.insert(event.is_discarded() ? "(not json)" : event["metadata"].value("uid", ""));
    }
  }
  return ids;
}

std::multiset<std::string> idsOf(const std::string& host, uint64_t first, uint64_t last,
                                 int copies = 1) {
  std::multiset<std::string> ids;
  for (int copy = 0; copy < copies; ++copy) {
    for (uint64_t sequence = first; sequence <= last; ++sequence) {
      ids.insert(host + "-" + std::to_string(sequence));
    }
  }
  return ids;
}

class SyslogRsyslogTest : public ::testing::Test {
protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    auto pki = testing::TestPki::create(dir_ / "pki");
    ASSERT_TRUE(pki.ok()) << pki.error().message();
    pki_.emplace(std::move(*pki));
    // The syslog server's own CA and certificate (for 127.0.0.1), apart from the agents' CA.
    for (std::vector<std::string> args :
         {std::vector<std::string>{"ca"}, std::vector<std::string>{"collector", "127.0.0.1"}}) {
      std::vector<std::string> argv = {"bash", MSEG_CERTS_SCRIPT, "--dir",
                                       (dir_ / "syslog-pki").string()};
      argv.insert(argv.end(), args.begin(), args.end());
      auto made = mseg::testing::runChecked(argv);
      ASSERT_TRUE(made.ok()) << made.error().message();
    }
    startRsyslog();
  }

  void startRsyslog(uint16_t tcp_port = 0, uint16_t tls_port = 0) {
    auto server = RsyslogServer::start(dir_ / "rsyslog", dir_ / "syslog-pki/ca.crt",
                                       dir_ / "syslog-pki/collector.crt",
                                       dir_ / "syslog-pki/collector.key", tcp_port, tls_port);
    ASSERT_TRUE(server.ok()) << server.error().message();
    rsyslog_.emplace(std::move(*server));
  }

  SyslogOutputConfig syslogOutput(std::string name, SyslogTransport transport,
                                  format::Payload payload) const {
    SyslogOutputConfig syslog;
    syslog.name = std::move(name);
    syslog.transport = transport;
    syslog.host = "127.0.0.1";
    syslog.port = transport == SyslogTransport::kTls ? rsyslog_->tlsPort() : rsyslog_->tcpPort();
    syslog.payload = payload;
    if (transport == SyslogTransport::kTls) {
      syslog.ca = (dir_ / "syslog-pki/ca.crt").string();
    }
    syslog.reconnect_initial_ms = 20;
    syslog.reconnect_max_ms = 200;
    return syslog;
  }

  // Starts a collector with an OCSF file output and `outputs`.
  void startCollector(std::vector<OutputConfig> outputs) {
    CollectorConfig config;
    config.listen = "127.0.0.1:0";
    config.tls = {pki_->server().cert.string(), pki_->server().key.string(),
                  pki_->caCert().string()};
    config.state_dir = (dir_ / "state").string();
    OcsfFileOutputConfig file;
    file.name = "archive";
    file.path = (dir_ / "out/flows.jsonl").string();
    config.outputs = {file};
    config.outputs.insert(config.outputs.end(), outputs.begin(), outputs.end());
    auto collector = Collector::start(config);
    ASSERT_TRUE(collector.ok()) << collector.error().message();
    collector_ = std::move(*collector);
  }

  std::optional<uint64_t> sendAsHostA(uint64_t first, uint64_t last) {
    const auto agent = pki_->agent("host-a");
    AgentStream stream(collector_->port(),
                       {readPem(pki_->caCert()), readPem(agent.cert), readPem(agent.key)});
    return stream.exchange(makeBatch("host-a", first, last));
  }

  OutputStats statsOf(const std::string& name) const {
    for (const auto& output : collector_->outputStats()) {
      if (output.name == name) {
        return output.stats;
      }
    }
    ADD_FAILURE() << "no output " << name;
    return {};
  }

  // Checks the RFC 5424 header fields rsyslog parsed and the payload kind of each message.
  static void expectFlowMessages(const std::vector<ReceivedMessage>& messages) {
    size_t cef = 0;
    for (const auto& message : messages) {
      EXPECT_EQ(message.hostname, "host-a");
      EXPECT_EQ(message.app_name, "microseg");
      EXPECT_EQ(message.msgid, "flow-start");
      cef += message.msg.starts_with("CEF:0|microseg|microseg|") ? 1 : 0;
    }
    EXPECT_EQ(cef * 2, messages.size()) << "half CEF, half OCSF JSON";
  }

  // Declared first so that it is destroyed last: the collector's syslog outputs stop before
  // rsyslogd goes, and both before the directory is removed.
  TempDir dir_;
  std::optional<testing::TestPki> pki_;
  std::optional<RsyslogServer> rsyslog_;
  std::unique_ptr<Collector> collector_;
};

TEST_F(SyslogRsyslogTest, DeliversCefAndJsonOverTcpWithOctetCounting) {
  std::vector<OutputConfig> outputs = {
      syslogOutput("tcp-cef", SyslogTransport::kTcp, format::Payload::kCef),
      syslogOutput("tcp-json", SyslogTransport::kTcp, format::Payload::kJson)};
  ASSERT_NO_FATAL_FAILURE(startCollector(outputs));

  ASSERT_EQ(sendAsHostA(1, 5), 5u);

  ASSERT_TRUE(rsyslog_->waitForTcp(10, kDeliveryTimeout));
  auto messages = rsyslog_->receivedOverTcp();
  expectFlowMessages(messages);
  EXPECT_EQ(recordIds(messages), idsOf("host-a", 1, 5, 2));
  EXPECT_TRUE(rsyslog_->receivedOverTls().empty());
}

TEST_F(SyslogRsyslogTest, DeliversCefAndJsonOverTlsVerifyingTheServer) {
  std::vector<OutputConfig> outputs = {
      syslogOutput("tls-cef", SyslogTransport::kTls, format::Payload::kCef),
      syslogOutput("tls-json", SyslogTransport::kTls, format::Payload::kJson)};
  ASSERT_NO_FATAL_FAILURE(startCollector(outputs));

  ASSERT_EQ(sendAsHostA(1, 5), 5u);

  ASSERT_TRUE(rsyslog_->waitForTls(10, kDeliveryTimeout));
  auto messages = rsyslog_->receivedOverTls();
  expectFlowMessages(messages);
  EXPECT_EQ(recordIds(messages), idsOf("host-a", 1, 5, 2));
  EXPECT_TRUE(rsyslog_->receivedOverTcp().empty());
}

TEST_F(SyslogRsyslogTest, SendsNothingToAServerItsCaDoesNotVouchFor) {
  auto untrusted = syslogOutput("tls-untrusted", SyslogTransport::kTls, format::Payload::kCef);
  untrusted.ca = pki_->caCert().string();
  std::vector<OutputConfig> outputs = {untrusted};
  ASSERT_NO_FATAL_FAILURE(startCollector(outputs));

  ASSERT_EQ(sendAsHostA(1, 3), 3u);

  ASSERT_TRUE(mseg::testing::pollUntil(
      kDeliveryTimeout, [&] { return statsOf("tls-untrusted").connect_failures >= 2; }));
  EXPECT_FALSE(statsOf("tls-untrusted").connected);
  EXPECT_EQ(statsOf("tls-untrusted").queued, 3u);
  EXPECT_TRUE(rsyslog_->receivedOverTls().empty());
}

TEST_F(SyslogRsyslogTest, ReconnectsAndDeliversAfterTheServerRestarts) {
  std::vector<OutputConfig> outputs = {
      syslogOutput("tcp-cef", SyslogTransport::kTcp, format::Payload::kCef)};
  ASSERT_NO_FATAL_FAILURE(startCollector(outputs));
  ASSERT_EQ(sendAsHostA(1, 3), 3u);
  ASSERT_TRUE(rsyslog_->waitForTcp(3, kDeliveryTimeout));
  uint16_t tcp_port = rsyslog_->tcpPort();
  uint16_t tls_port = rsyslog_->tlsPort();
  rsyslog_->kill();
  rsyslog_.reset();
  ASSERT_NO_FATAL_FAILURE(startRsyslog(tcp_port, tls_port));

  ASSERT_EQ(sendAsHostA(4, 6), 6u);

  // At least once: the new server gets every record sent after the restart, and possibly one
  // the old server was killed before it could write.
  ASSERT_TRUE(mseg::testing::pollUntil(kDeliveryTimeout, [&] {
    auto ids = recordIds(rsyslog_->receivedOverTcp());
    return ids.count("host-a-4") && ids.count("host-a-5") && ids.count("host-a-6");
  }));
  EXPECT_GE(statsOf("tcp-cef").reconnects, 1u);
  EXPECT_EQ(statsOf("tcp-cef").queue_overflow, 0u);
}

// A loopback port that refuses connections: bound, never listening, held for the test.
class RefusingPort {
public:
  RefusingPort() {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    if (bind(fd_, reinterpret_cast<sockaddr*>(&address), length) == 0 &&
        getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
      port_ = ntohs(address.sin_port);
    }
  }
  ~RefusingPort() { close(fd_); }

  uint16_t port() const { return port_; }

private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

class SyslogOutputTest : public ::testing::Test {};

TEST_F(SyslogOutputTest, CountsMessagesDroppedBeyondAFullQueue) {
  RefusingPort refusing;
  ASSERT_NE(refusing.port(), 0);
  SyslogOutputConfig config;
  config.name = "siem";
  config.host = "127.0.0.1";
  config.port = refusing.port();
  config.queue_messages = 3;
  auto output = SyslogOutput::start(config);
  ASSERT_TRUE(output.ok()) << output.error().message();
  std::vector<FlowRecord> records;
  for (uint64_t sequence = 1; sequence <= 5; ++sequence) {
    records.push_back(testing::makeRecord("host-a", sequence));
  }
  std::vector<const FlowRecord*> pointers;
  for (const auto& record : records) {
    pointers.push_back(&record);
  }

  ASSERT_TRUE((*output)->write(pointers).ok());

  auto stats = (*output)->stats();
  EXPECT_EQ(stats.queued, 3u);
  EXPECT_EQ(stats.queue_overflow, 2u);
  EXPECT_EQ(stats.records, 0u);
  EXPECT_TRUE(mseg::testing::pollUntil(kDeliveryTimeout,
                                       [&] { return (*output)->stats().connect_failures >= 1; }));
}

}  // namespace
}  // namespace mseg::collector
