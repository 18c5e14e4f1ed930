// microseg-collector's gRPC service on loopback with real mutual TLS: agents are acknowledged,
// records are stored exactly once, and wrong certificates and malformed streams are refused
// without disturbing other agents. No root needed.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "agent_client.hpp"
#include "collector_testing.hpp"
#include "mseg/certificate_check.hpp"
#include "mseg/collector/collector.hpp"
#include "support/poll.hpp"
#include "support/subprocess.hpp"
#include "test_pki.hpp"

namespace mseg::collector {
namespace {

using testing::AgentStream;
using testing::CertFiles;
using testing::ClientTls;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using testing::makeBatch;
using testing::readPem;
using testing::TempDir;

class CollectorServiceTest : public ::testing::Test {
protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    auto pki = testing::TestPki::create(dir_ / "pki");
    ASSERT_TRUE(pki.ok()) << pki.error().message();
    pki_.emplace(std::move(*pki));

    config_.listen = "127.0.0.1:0";
    config_.tls = {pki_->server().cert.string(), pki_->server().key.string(),
                   pki_->caCert().string()};
    config_.state_dir = (dir_ / "state").string();
    OcsfFileOutputConfig file;
    file.name = "archive";
    file.path = (dir_ / "out/flows.jsonl").string();
    config_.outputs = {file};
    startCollector();
  }

  void startCollector() {
    auto collector = Collector::start(config_);
    ASSERT_TRUE(collector.ok()) << collector.error().message();
    collector_ = std::move(*collector);
  }

  ClientTls tlsOf(const CertFiles& files) const {
    return {readPem(pki_->caCert()), readPem(files.cert), readPem(files.key)};
  }

  std::unique_ptr<AgentStream> connect(const CertFiles& files) const {
    return std::make_unique<AgentStream>(collector_->port(), tlsOf(files));
  }

  // The record_id (OCSF metadata.uid) of every line the file output holds, in file order.
  std::vector<std::string> storedRecordIds() const {
    std::ifstream file(dir_ / "out/flows.jsonl");
    std::vector<std::string> ids;
    for (std::string line; std::getline(file, line);) {
      auto event = nlohmann::json::parse(line, nullptr, false);
      ids.push_back(event.is_discarded() ? "(not json)" : event["metadata"].value("uid", ""));
    }
    return ids;
  }

  TempDir dir_;
  std::optional<testing::TestPki> pki_;
  CollectorConfig config_;
  std::unique_ptr<Collector> collector_;
};

TEST_F(CollectorServiceTest, StoresAndAcknowledgesRecordsOfTheCertificatesHost) {
  auto agent = connect(pki_->agent("host-a"));

  auto first = agent->exchange(makeBatch("host-a", 1, 2));
  auto second = agent->exchange(makeBatch("host-a", 3, 3));

  EXPECT_EQ(first, 2u);
  EXPECT_EQ(second, 3u);
  EXPECT_TRUE(agent->finish().ok());
  EXPECT_THAT(storedRecordIds(), ElementsAre("host-a-1", "host-a-2", "host-a-3"));
  EXPECT_EQ(collector_->stats().streams_accepted, 1u);
}

TEST_F(CollectorServiceTest, DoesNotStoreARepeatedBatchTwice) {
  auto agent = connect(pki_->agent("host-a"));
  ASSERT_EQ(agent->exchange(makeBatch("host-a", 1, 3)), 3u);

  auto same_stream = agent->exchange(makeBatch("host-a", 1, 3));
  auto reconnected = connect(pki_->agent("host-a"))->exchange(makeBatch("host-a", 2, 4));

  EXPECT_EQ(same_stream, 3u);
  EXPECT_EQ(reconnected, 4u);
  EXPECT_THAT(storedRecordIds(), ElementsAre("host-a-1", "host-a-2", "host-a-3", "host-a-4"));
  EXPECT_EQ(collector_->stats().records_duplicate, 5u);
}

TEST_F(CollectorServiceTest, KeepsExactlyOnceAcrossACollectorRestart) {
  ASSERT_EQ(connect(pki_->agent("host-a"))->exchange(makeBatch("host-a", 1, 3)), 3u);
  collector_.reset();
  ASSERT_NO_FATAL_FAILURE(startCollector());

  auto agent = connect(pki_->agent("host-a"));
  auto announced = agent->exchange({});
  auto resent = agent->exchange(makeBatch("host-a", 1, 5));

  EXPECT_EQ(announced, 3u);
  EXPECT_EQ(resent, 5u);
  EXPECT_THAT(storedRecordIds(),
              ElementsAre("host-a-1", "host-a-2", "host-a-3", "host-a-4", "host-a-5"));
}

TEST_F(CollectorServiceTest, RefusesAClientCertificateFromAnotherCa) {
  auto agent = connect(pki_->rogueAgent());

  auto acknowledged = agent->exchange(makeBatch("host-a", 1, 1));

  EXPECT_EQ(acknowledged, std::nullopt);
  EXPECT_EQ(agent->finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(storedRecordIds(), IsEmpty());
  EXPECT_EQ(collector_->stats().streams_accepted, 0u);
}

TEST_F(CollectorServiceTest, RefusesAnExpiredClientCertificate) {
  auto agent = connect(pki_->expiredAgent());

  auto acknowledged = agent->exchange(makeBatch("host-a", 1, 1));

  EXPECT_EQ(acknowledged, std::nullopt);
  EXPECT_EQ(agent->finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(storedRecordIds(), IsEmpty());
  EXPECT_EQ(collector_->stats().streams_accepted, 0u);
}

TEST_F(CollectorServiceTest, OwnCertificateCheckTellsExpiredFromValid) {
  spdlog::logger silent("certificate-check");  // no sinks: the outcome is the return value
  const auto now = std::chrono::system_clock::now();
  const std::string expired = pki_->expiredAgent().cert.string();
  const std::string valid = pki_->server().cert.string();

  auto expired_validity = readCertificateValidity(expired);
  auto valid_validity = readCertificateValidity(valid);
  auto missing = readCertificateValidity(pki_->caCert().string() + ".missing");

  ASSERT_TRUE(expired_validity) << expired_validity.error().message();
  EXPECT_LT(expired_validity->not_after, now);
  EXPECT_FALSE(checkOwnCertificate(silent, "tls.cert", expired, now));
  ASSERT_TRUE(valid_validity) << valid_validity.error().message();
  EXPECT_TRUE(checkOwnCertificate(silent, "tls.cert", valid, now));
  EXPECT_TRUE(checkOwnCertificate(silent, "tls.cert", valid,
                                  valid_validity->not_after - std::chrono::hours(24)));
  EXPECT_FALSE(checkOwnCertificate(silent, "tls.cert", valid, valid_validity->not_after));
  ASSERT_FALSE(missing);
  EXPECT_THAT(missing.error().message(), HasSubstr(".missing"));
}

TEST_F(CollectorServiceTest, RefusesAClientWithoutACertificate) {
  AgentStream agent(collector_->port(), {readPem(pki_->caCert()), "", ""});

  auto acknowledged = agent.exchange(makeBatch("host-a", 1, 1));

  EXPECT_EQ(acknowledged, std::nullopt);
  EXPECT_EQ(agent.finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(storedRecordIds(), IsEmpty());
  EXPECT_EQ(collector_->stats().streams_accepted, 0u);
}

TEST_F(CollectorServiceTest, RefusesRecordsOfAnotherHostWithPermissionDenied) {
  auto agent = connect(pki_->agent("host-a"));

  auto acknowledged = agent->exchange(makeBatch("host-b", 1, 1));
  auto status = agent->finish();

  EXPECT_EQ(acknowledged, std::nullopt);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(status.error_message(), ::testing::HasSubstr("does not name host `host-b`"));
  EXPECT_THAT(storedRecordIds(), IsEmpty());
  EXPECT_EQ(collector_->stats().streams_refused_identity, 1u);
}

TEST_F(CollectorServiceTest, RefusesAMalformedStreamWhileAnotherAgentsStreamGoesOn) {
  auto good = connect(pki_->agent("host-a"));
  auto bad = connect(pki_->agent("host-b"));
  ASSERT_EQ(good->exchange(makeBatch("host-a", 1, 2)), 2u);
  auto out_of_order = makeBatch("host-b", 1, 3);
  out_of_order.mutable_records(2)->set_sequence(1);

  auto refused = bad->exchange(out_of_order);
  auto still_served = good->exchange(makeBatch("host-a", 3, 4));

  EXPECT_EQ(refused, std::nullopt);
  EXPECT_EQ(bad->finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(still_served, 4u);
  EXPECT_TRUE(good->finish().ok());
  EXPECT_THAT(storedRecordIds(), ElementsAre("host-a-1", "host-a-2", "host-a-3", "host-a-4"));
  EXPECT_EQ(collector_->stats().streams_refused_malformed, 1u);
}

TEST_F(CollectorServiceTest, RefusesAnOversizedMessageForThatStreamOnly) {
  collector_.reset();
  config_.limits.max_message_bytes = 4096;
  ASSERT_NO_FATAL_FAILURE(startCollector());
  auto good = connect(pki_->agent("host-a"));
  auto big = connect(pki_->agent("host-b"));
  ASSERT_EQ(good->exchange(makeBatch("host-a", 1, 1)), 1u);

  auto refused = big->exchange(makeBatch("host-b", 1, 200));
  auto still_served = good->exchange(makeBatch("host-a", 2, 2));

  EXPECT_EQ(refused, std::nullopt);
  EXPECT_EQ(big->finish().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(still_served, 2u);
  EXPECT_THAT(storedRecordIds(), ElementsAre("host-a-1", "host-a-2"));
}

TEST_F(CollectorServiceTest, StoresEveryRecordOfAgentsStreamingConcurrently) {
  constexpr uint64_t kBatches = 40;
  constexpr uint64_t kPerBatch = 25;
  auto stream_all = [&](const std::string& host, std::optional<uint64_t>& last) {
    auto agent = connect(pki_->agent(host));
    for (uint64_t batch = 0; batch < kBatches; ++batch) {
      last = agent->exchange(makeBatch(host, batch * kPerBatch + 1, (batch + 1) * kPerBatch));
    }
  };
  std::optional<uint64_t> last_a;
  std::optional<uint64_t> last_b;

  std::thread a([&] { stream_all("host-a", last_a); });
  std::thread b([&] { stream_all("host-b", last_b); });
  a.join();
  b.join();

  EXPECT_EQ(last_a, kBatches * kPerBatch);
  EXPECT_EQ(last_b, kBatches * kPerBatch);
  EXPECT_EQ(storedRecordIds().size(), 2 * kBatches * kPerBatch);
  EXPECT_EQ(collector_->stats().records_stored, 2 * kBatches * kPerBatch);
  EXPECT_EQ(collector_->stats().records_duplicate, 0u);
}

// The installed binary, as systemd runs it: started with a configuration, stopped by SIGTERM.
class CollectorBinaryTest : public CollectorServiceTest {};

TEST_F(CollectorBinaryTest, ServesUntilSigtermAndThenExitsWithZero) {
  collector_.reset();
  auto config_path = dir_ / "collector.yaml";
  std::ofstream(config_path) << "listen: 127.0.0.1:0\n"
                             << "tls: {cert: " << config_.tls.cert << ", key: " << config_.tls.key
                             << ", client_ca: " << config_.tls.client_ca << "}\n"
                             << "state_dir: " << (dir_ / "binary-state").string() << "\n"
                             << "outputs: [{type: ocsf_file, path: "
                             << (dir_ / "binary-out/flows.jsonl").string() << "}]\n";
  auto process =
      mseg::testing::Subprocess::start({MSEG_COLLECTOR_BINARY, "--config", config_path.string()});
  ASSERT_TRUE(process.ok()) << process.error().message();
  // The output file exists once its output is open, right before the server starts.
  ASSERT_TRUE(mseg::testing::pollUntil(std::chrono::seconds(10), [&] {
    return std::filesystem::exists(dir_ / "binary-out/flows.jsonl");
  }));

  ASSERT_EQ(kill(process->pid(), SIGTERM), 0);
  auto status = process->wait(std::chrono::seconds(10));

  ASSERT_TRUE(status.ok()) << status.error().message();
  EXPECT_EQ(*status, 0) << process->err();
}

}  // namespace
}  // namespace mseg::collector
