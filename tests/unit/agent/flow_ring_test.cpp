// FlowRing: the bounded ring of recent flow records behind `microsegctl flows`.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "flow_ring.hpp"

namespace mseg::agent {
namespace {

using namespace std::chrono_literals;

FlowRecord recordOn(uint32_t port) {
  FlowRecord record;
  record.set_peer_port(port);
  return record;
}

const FlowRing::Filter kEvery = [](const FlowRecord&) { return true; };

TEST(FlowRingTest, KeepsTheNewestRecordsUpToItsCapacity) {
  FlowRing ring(3);
  for (uint32_t port = 1; port <= 5; port++) {
    ring.push(recordOn(port));
  }
  uint64_t position = 0;

  auto recent = ring.recent(10, kEvery, position);

  ASSERT_EQ(recent.size(), 3u);
  EXPECT_EQ(recent[0].peer_port(), 3u);
  EXPECT_EQ(recent[2].peer_port(), 5u);
}

TEST(FlowRingTest, RecentCountsOnlyRecordsThatPassTheFilter) {
  FlowRing ring(10);
  for (uint32_t port = 1; port <= 6; port++) {
    ring.push(recordOn(port));
  }
  uint64_t position = 0;

  auto even = ring.recent(2, [](const FlowRecord& r) { return r.peer_port() % 2 == 0; }, position);

  ASSERT_EQ(even.size(), 2u);
  EXPECT_EQ(even[0].peer_port(), 4u);
  EXPECT_EQ(even[1].peer_port(), 6u);
}

TEST(FlowRingTest, ReaderGetsOnlyRecordsPushedAfterItsPosition) {
  FlowRing ring(10);
  ring.push(recordOn(1));
  uint64_t position = 0;
  (void)ring.recent(0, kEvery, position);

  std::thread writer([&] {
    std::this_thread::sleep_for(20ms);
    ring.push(recordOn(2));
  });
  auto newer = ring.readNewer(position, kEvery, 5s);
  writer.join();

  ASSERT_EQ(newer.records.size(), 1u);
  EXPECT_EQ(newer.records[0].peer_port(), 2u);
  EXPECT_EQ(newer.skipped, 0u);
  EXPECT_TRUE(ring.readNewer(position, kEvery, 1ms).records.empty());
}

TEST(FlowRingTest, SlowReaderIsToldHowManyRecordsFellOutOfTheRing) {
  FlowRing ring(2);
  uint64_t position = 0;
  (void)ring.recent(0, kEvery, position);
  for (uint32_t port = 1; port <= 5; port++) {
    ring.push(recordOn(port));
  }

  auto newer = ring.readNewer(position, [](const FlowRecord& r) { return r.peer_port() == 5; },
                              1ms);
  auto after = ring.readNewer(position, kEvery, 1ms);

  ASSERT_EQ(newer.records.size(), 1u);
  EXPECT_EQ(newer.records[0].peer_port(), 5u);
  EXPECT_EQ(newer.skipped, 3u) << "records 1 to 3 were gone, whether they match or not";
  EXPECT_EQ(after.skipped, 0u);
}

TEST(FlowRingTest, CloseWakesAWaitingReader) {
  FlowRing ring(2);
  uint64_t position = 0;
  std::thread closer([&] {
    std::this_thread::sleep_for(20ms);
    ring.close();
  });

  auto started = std::chrono::steady_clock::now();
  auto newer = ring.readNewer(position, kEvery, 10s);
  closer.join();

  EXPECT_TRUE(newer.records.empty());
  EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
  EXPECT_TRUE(ring.closed());
}

}  // namespace
}  // namespace mseg::agent
