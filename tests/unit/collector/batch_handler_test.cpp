// One request at a time through the collector's core: identity checks, stream rules and
// exactly-once storage by (agent_id, sequence), against recording outputs.
#include "mseg/collector/batch_handler.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "collector_testing.hpp"

namespace mseg::collector {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using testing::makeBatch;
using testing::TempDir;

// Keeps the sequence numbers it was given; fails on request.
class RecordingOutput final : public Output {
public:
  RecordingOutput(std::string name, bool durable) : name_(std::move(name)), durable_(durable) {}

  const std::string& name() const override { return name_; }
  bool durable() const override { return durable_; }
  Status write(std::span<const FlowRecord* const> records) override {
    if (fail_) {
      return Error(ENOSPC, "disk full");
    }
    for (const FlowRecord* record : records) {
      sequences.push_back(record->sequence());
    }
    return {};
  }
  void stop(uint32_t) override {}
  OutputStats stats() const override { return {}; }

  void setFailing(bool fail) { fail_ = fail; }

  std::vector<uint64_t> sequences;

private:
  std::string name_;
  bool durable_;
  bool fail_ = false;
};

class BatchHandlerTest : public ::testing::Test {
protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    restart();
    stream_.peer.address = "ipv4:127.0.0.1:40000";
    stream_.peer.common_name = "host-a";
    stream_.peer.dns_names = {"host-a", "host-a.example"};
  }

  // A handler over the same state directory and outputs, as after a collector restart.
  void restart() {
    auto store = SequenceStore::open(dir_ / "state");
    ASSERT_TRUE(store.ok()) << store.error().message();
    handler_ = std::make_unique<BatchHandler>(std::move(*store),
                                              std::vector<Output*>{&syslog_, &file_}, 100);
  }

  BatchOutcome send(const microseg::telemetry::v1::ExportRequest& request) {
    return handler_->handle(stream_, request);
  }

  TempDir dir_;
  RecordingOutput file_{"file", true};
  RecordingOutput syslog_{"syslog", false};
  std::unique_ptr<BatchHandler> handler_;
  StreamState stream_;
};

TEST_F(BatchHandlerTest, StoresNewRecordsInEveryOutputAndAcknowledgesTheLast) {
  auto outcome = send(makeBatch("host-a", 1, 3));

  ASSERT_TRUE(outcome.status.ok()) << outcome.status.error_message();
  EXPECT_EQ(outcome.acknowledged_sequence, 3u);
  EXPECT_THAT(file_.sequences, ElementsAre(1, 2, 3));
  EXPECT_THAT(syslog_.sequences, ElementsAre(1, 2, 3));
  EXPECT_EQ(handler_->stats().records_stored, 3u);
}

TEST_F(BatchHandlerTest, AcknowledgesARepeatedBatchWithoutWritingItAgain) {
  ASSERT_TRUE(send(makeBatch("host-a", 1, 3)).status.ok());

  auto outcome = send(makeBatch("host-a", 1, 3));

  ASSERT_TRUE(outcome.status.ok());
  EXPECT_EQ(outcome.acknowledged_sequence, 3u);
  EXPECT_THAT(file_.sequences, ElementsAre(1, 2, 3));
  EXPECT_EQ(handler_->stats().records_duplicate, 3u);
}

TEST_F(BatchHandlerTest, WritesOnlyTheNewTailOfAnOverlappingBatch) {
  ASSERT_TRUE(send(makeBatch("host-a", 1, 3)).status.ok());

  auto outcome = send(makeBatch("host-a", 2, 5));

  EXPECT_EQ(outcome.acknowledged_sequence, 5u);
  EXPECT_THAT(file_.sequences, ElementsAre(1, 2, 3, 4, 5));
  EXPECT_EQ(handler_->stats().records_duplicate, 2u);
}

TEST_F(BatchHandlerTest, RemembersTheMarkAcrossARestart) {
  ASSERT_TRUE(send(makeBatch("host-a", 1, 3)).status.ok());
  restart();
  stream_.agent_id.clear();

  auto outcome = send(makeBatch("host-a", 1, 4));

  EXPECT_EQ(outcome.acknowledged_sequence, 4u);
  EXPECT_THAT(file_.sequences, ElementsAre(1, 2, 3, 4));
}

TEST_F(BatchHandlerTest, RefusesRecordsOfAHostTheCertificateDoesNotName) {
  auto request = makeBatch("host-a", 1, 2);
  request.mutable_records(1)->set_host("host-b");

  auto outcome = send(request);

  EXPECT_EQ(outcome.status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(outcome.status.error_message(), HasSubstr("does not name host `host-b`"));
  EXPECT_THAT(file_.sequences, IsEmpty());
  EXPECT_EQ(handler_->stats().streams_refused_identity, 1u);
}

TEST_F(BatchHandlerTest, RefusesAnAgentIdTheCertificateDoesNotName) {
  auto request = makeBatch("host-a", 1, 1);
  request.mutable_records(0)->set_agent_id("host-b");

  auto outcome = send(request);

  EXPECT_EQ(outcome.status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(file_.sequences, IsEmpty());
}

TEST_F(BatchHandlerTest, RefusesSequencesOutOfOrderWithinABatch) {
  auto request = makeBatch("host-a", 1, 3);
  request.mutable_records(2)->set_sequence(2);

  auto outcome = send(request);

  EXPECT_EQ(outcome.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(outcome.status.error_message(),
            "sequence 2 after 2: records must be in increasing sequence order");
  EXPECT_THAT(file_.sequences, IsEmpty());
  EXPECT_EQ(handler_->stats().streams_refused_malformed, 1u);
}

TEST_F(BatchHandlerTest, RefusesSequenceZero) {
  auto outcome = send(makeBatch("host-a", 0, 1));

  EXPECT_EQ(outcome.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(file_.sequences, IsEmpty());
}

TEST_F(BatchHandlerTest, RefusesASecondAgentIdOnOneStream) {
  ASSERT_TRUE(send(makeBatch("host-a", 1, 1)).status.ok());
  auto request = makeBatch("host-a", 2, 2);
  request.mutable_records(0)->set_agent_id("host-a.example");

  auto outcome = send(request);

  EXPECT_EQ(outcome.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(outcome.status.error_message(), HasSubstr("one stream carries one agent"));
}

TEST_F(BatchHandlerTest, RefusesABatchOverTheRecordLimit) {
  auto outcome = send(makeBatch("host-a", 1, 101));

  EXPECT_EQ(outcome.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(file_.sequences, IsEmpty());
}

TEST_F(BatchHandlerTest, AcceptsAndCountsSequenceGaps) {
  ASSERT_TRUE(send(makeBatch("host-a", 1, 2)).status.ok());
  auto request = makeBatch("host-a", 5, 5);
  *request.add_records() = testing::makeRecord("host-a", 9);

  auto outcome = send(request);

  ASSERT_TRUE(outcome.status.ok());
  EXPECT_EQ(outcome.acknowledged_sequence, 9u);
  EXPECT_THAT(file_.sequences, ElementsAre(1, 2, 5, 9));
  EXPECT_EQ(handler_->stats().sequence_gaps, 2u);
  EXPECT_EQ(handler_->stats().sequence_missing, 5u);
}

TEST_F(BatchHandlerTest, CountsOnlyTheGrowthOfTheAgentsDropCountEvenAfterARestart) {
  ASSERT_TRUE(send(makeBatch("host-a", 1, 1, 10)).status.ok());
  ASSERT_TRUE(send(makeBatch("host-a", 2, 2, 15)).status.ok());
  restart();
  stream_.agent_id.clear();

  ASSERT_TRUE(send(makeBatch("host-a", 3, 3, 15)).status.ok());

  EXPECT_EQ(handler_->stats().agent_dropped, 0u);
  ASSERT_TRUE(send(makeBatch("host-a", 4, 4, 16)).status.ok());
  EXPECT_EQ(handler_->stats().agent_dropped, 1u);
}

TEST_F(BatchHandlerTest, LeavesTheMarkWhenAFileOutputFailsSoTheRetryStoresTheRecords) {
  file_.setFailing(true);

  auto failed = send(makeBatch("host-a", 1, 2));
  file_.setFailing(false);
  auto retried = send(makeBatch("host-a", 1, 2));

  EXPECT_EQ(failed.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(failed.acknowledged_sequence, 0u);
  ASSERT_TRUE(retried.status.ok());
  EXPECT_EQ(retried.acknowledged_sequence, 2u);
  EXPECT_THAT(file_.sequences, ElementsAre(1, 2));
  EXPECT_THAT(syslog_.sequences, ElementsAre(1, 2));
  EXPECT_EQ(handler_->stats().streams_failed_storage, 1u);
}

TEST_F(BatchHandlerTest, AnswersARequestWithoutRecordsWithTheCertificateHostsMark) {
  ASSERT_TRUE(send(makeBatch("host-a", 1, 7)).status.ok());
  StreamState fresh_stream;
  fresh_stream.peer = stream_.peer;

  auto outcome = handler_->handle(fresh_stream, microseg::telemetry::v1::ExportRequest());

  ASSERT_TRUE(outcome.status.ok());
  EXPECT_EQ(outcome.acknowledged_sequence, 7u);
}

TEST_F(BatchHandlerTest, KeepsAgentsApart) {
  ASSERT_TRUE(send(makeBatch("host-a", 1, 5)).status.ok());
  StreamState other;
  other.peer.common_name = "host-b";

  auto outcome = handler_->handle(other, makeBatch("host-b", 1, 2));

  EXPECT_EQ(outcome.acknowledged_sequence, 2u);
  EXPECT_THAT(file_.sequences, ElementsAre(1, 2, 3, 4, 5, 1, 2));
}

}  // namespace
}  // namespace mseg::collector
