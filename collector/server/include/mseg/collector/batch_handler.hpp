// What happens to one ExportRequest: checks against the sender's certificate and the stream's
// rules, exactly-once filtering by (agent_id, sequence), writing to the outputs and persisting
// the agent's mark. Independent of gRPC's threading, so it is tested without a network.
#pragma once

#include <grpcpp/support/status.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "microseg/telemetry/v1/telemetry.pb.h"
#include "mseg/collector/identity.hpp"
#include "mseg/collector/output.hpp"
#include "mseg/collector/sequence_store.hpp"

namespace mseg::collector {

// Counters of the collector as a whole, monotonic except streams_active.
struct IngestStats {
  std::atomic<uint64_t> streams_accepted{0};
  std::atomic<uint64_t> streams_active{0};
  std::atomic<uint64_t> streams_refused_identity{0};   // PERMISSION_DENIED
  std::atomic<uint64_t> streams_refused_malformed{0};  // INVALID_ARGUMENT, RESOURCE_EXHAUSTED
  std::atomic<uint64_t> streams_failed_storage{0};     // UNAVAILABLE: an output or state failed
  std::atomic<uint64_t> batches{0};
  std::atomic<uint64_t> records_stored{0};
  std::atomic<uint64_t> records_duplicate{0};  // at or below the mark: acknowledged, not written
  std::atomic<uint64_t> sequence_gaps{0};      // times a sequence jumped
  std::atomic<uint64_t> sequence_missing{0};   // sequence numbers skipped by those jumps
  std::atomic<uint64_t> agent_dropped{0};      // growth of agents' dropped_total
};

// What one stream has established so far; owned by the stream, used by one batch at a time.
struct StreamState {
  PeerIdentity peer;
  std::string agent_id;  // set by the first record; every later record must carry the same
};

struct BatchOutcome {
  grpc::Status status;  // not OK: the stream ends with it
  uint64_t acknowledged_sequence = 0;
};

class BatchHandler {
public:
  // `outputs` must outlive the handler.
  BatchHandler(SequenceStore store, std::vector<Output*> outputs, uint32_t max_batch_records);

  // Handles one request of `stream`. In order:
  //  - refuses (RESOURCE_EXHAUSTED) more than max_batch_records records;
  //  - refuses (PERMISSION_DENIED) a record whose host or agent_id the peer certificate does
  //    not name, and (INVALID_ARGUMENT) an agent_id other than the stream's first, a sequence
  //    of 0, or sequences not strictly increasing within the request;
  //  - under the agent's lock: records at or below the agent's stored mark are counted as
  //    duplicates and skipped; the rest go to every output; once every durable output has
  //    them, the mark is persisted. A failure there ends the stream with UNAVAILABLE and
  //    leaves the mark, so the agent sends the records again.
  // The outcome carries the mark after the request. A refusal is logged at warn, naming the
  // peer. Thread-safe; requests of one agent are serialised.
  BatchOutcome handle(StreamState& stream, const microseg::telemetry::v1::ExportRequest& request);

  // The stored mark of `agent_id`, for acknowledging a request without records.
  Result<AgentMark> mark(const std::string& agent_id);

  const IngestStats& stats() const { return stats_; }
  IngestStats& mutableStats() { return stats_; }

private:
  struct AgentEntry {
    std::mutex mutex;               // serialises this agent's batches
    std::optional<AgentMark> mark;  // loaded from the store on first use
  };

  grpc::Status check(StreamState& stream, const microseg::telemetry::v1::ExportRequest& request);
  std::shared_ptr<AgentEntry> entryFor(const std::string& agent_id);
  Status loadMark(const std::string& agent_id, AgentEntry& entry);
  BatchOutcome store(const std::string& agent_id, AgentEntry& entry,
                     const microseg::telemetry::v1::ExportRequest& request);
  void noteDrops(const std::string& agent_id, const AgentMark& mark, uint64_t dropped_total);

  SequenceStore store_;
  std::vector<Output*> outputs_;
  uint32_t max_batch_records_;
  std::mutex agents_mutex_;
  std::map<std::string, std::shared_ptr<AgentEntry>> agents_;  // by canonical agent id
  IngestStats stats_;
};

}  // namespace mseg::collector
