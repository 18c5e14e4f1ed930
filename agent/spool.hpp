// The agent's on-disk spool of flow records awaiting the collector's acknowledgement.
//
// Records are numbered by the spool as they are appended (the sequence the collector
// acknowledges), written to segment files and fsync'd once per tick, so a crash loses at most
// the last tick's records, and never renumbers one: a restarted agent continues after the
// highest sequence ever handed out. Acknowledged segments are deleted. When the spool would
// exceed its size limit, the oldest segment is dropped and its records are counted as dropped.
//
// Thread-safe: the agent loop appends while the exporter thread reads and acknowledges.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "microseg/telemetry/v1/telemetry.pb.h"
#include "mseg/result.hpp"

namespace mseg::agent {

class Spool {
public:
  // Opens (creating) the spool in `dir`, recovering segments and numbering from a previous run.
  static Result<std::unique_ptr<Spool>> open(std::string dir, uint64_t max_bytes);

  // Numbers the record (sequence and record id from `host`) and queues it for the next sync.
  void append(microseg::telemetry::v1::FlowRecord& record, const std::string& host);

  // Writes and fsyncs queued records. Called once per tick.
  Status sync();

  // Up to `max_records` stored records with sequence > `after`, in order.
  Result<std::vector<microseg::telemetry::v1::FlowRecord>> read(uint64_t after,
                                                                size_t max_records);

  // Everything up to `sequence` is stored by the collector: forget it.
  Status acknowledge(uint64_t sequence);

  uint64_t acknowledged() const;
  uint64_t nextSequence() const;
  uint64_t droppedTotal() const;
  uint64_t pendingRecords() const;  // stored or queued, not yet acknowledged

private:
  Spool(std::string dir, uint64_t max_bytes) : dir_(std::move(dir)), max_bytes_(max_bytes) {}
  Status recover();
  Status persistState() const;
  Status startSegment(uint64_t first_sequence);
  void dropOldestSegments();
  std::string segmentPath(uint64_t first_sequence) const;

  mutable std::mutex mutex_;
  std::string dir_;
  uint64_t max_bytes_;
  uint64_t next_sequence_ = 1;
  uint64_t acknowledged_ = 0;
  uint64_t dropped_ = 0;
  std::map<uint64_t, uint64_t> segment_bytes_;  // first sequence -> bytes on disk
  uint64_t total_bytes_ = 0;
  int segment_fd_ = -1;
  uint64_t segment_first_ = 0;
  std::string queued_;         // framed records not written yet
  uint64_t queued_first_ = 0;  // sequence of the first queued record
};

}  // namespace mseg::agent
