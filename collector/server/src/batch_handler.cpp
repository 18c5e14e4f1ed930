#include "mseg/collector/batch_handler.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "mseg/collector/logging.hpp"

namespace mseg::collector {
namespace {

using microseg::telemetry::v1::ExportRequest;

// What one request adds to an agent's history, kept apart from the counters until it is stored,
// so that a failed and retried request does not count its gaps twice.
struct Novelty {
  std::vector<const FlowRecord*> fresh;
  uint64_t duplicates = 0;
  uint64_t gaps = 0;
  uint64_t missing = 0;
  uint64_t first_missing = 0;  // the first sequence number skipped, for the log
};

// LIMITATION: a record at or below the mark is taken for a resend. An agent whose numbering
// started over (spool wiped, host reinstalled) is indistinguishable and has its records dropped
// as duplicates until it passes the mark; the protocol would need an agent incarnation id.
Novelty sortOut(const ExportRequest& request, uint64_t stored) {
  Novelty novelty;
  uint64_t expected = stored + 1;
  for (const auto& record : request.records()) {
    if (record.sequence() <= stored) {
      ++novelty.duplicates;
      continue;
    }
    if (record.sequence() > expected) {
      if (novelty.gaps == 0) {
        novelty.first_missing = expected;
      }
      ++novelty.gaps;
      novelty.missing += record.sequence() - expected;
    }
    novelty.fresh.push_back(&record);
    expected = record.sequence() + 1;
  }
  return novelty;
}

}  // namespace

BatchHandler::BatchHandler(SequenceStore store, std::vector<Output*> outputs,
                           uint32_t max_batch_records)
    : store_(std::move(store)),
      outputs_(std::move(outputs)),
      max_batch_records_(max_batch_records) {
  // Durable outputs first: a record reaches syslog only once the files have it, so a failed
  // file write does not leave syslog ahead of what the agent will send again.
  std::stable_partition(outputs_.begin(), outputs_.end(),
                        [](const Output* output) { return output->durable(); });
}

grpc::Status BatchHandler::check(StreamState& stream, const ExportRequest& request) {
  const PeerIdentity& peer = stream.peer;
  if (request.records_size() > static_cast<int>(max_batch_records_)) {
    ++stats_.streams_refused_malformed;
    rpcLog()->warn("batch too large, stream refused peer={} {} records={} max_batch_records={}",
                   peer.address, peer.describe(), request.records_size(), max_batch_records_);
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        fmt::format("a batch of {} records exceeds the limit of {}",
                                    request.records_size(), max_batch_records_));
  }

  uint64_t previous = 0;
  for (const auto& record : request.records()) {
    if (!peer.names(record.host()) || !peer.names(record.agent_id())) {
      ++stats_.streams_refused_identity;
      rpcLog()->warn("record of another host refused peer={} {} claimed_host={} agent_id={}",
                     peer.address, peer.describe(), record.host(), record.agent_id());
      return grpc::Status(
          grpc::StatusCode::PERMISSION_DENIED,
          fmt::format("client certificate ({}) does not name host `{}` and agent_id `{}`",
                      peer.describe(), record.host(), record.agent_id()));
    }

    std::string problem;
    if (!stream.agent_id.empty() && !hostNamesEqual(stream.agent_id, record.agent_id())) {
      problem = fmt::format("agent_id `{}` after `{}`: one stream carries one agent",
                            record.agent_id(), stream.agent_id);
    } else if (record.sequence() == 0) {
      problem = "sequence 0: sequences start at 1";
    } else if (record.sequence() <= previous) {
      problem = fmt::format("sequence {} after {}: records must be in increasing sequence order",
                            record.sequence(), previous);
    }
    if (!problem.empty()) {
      ++stats_.streams_refused_malformed;
      rpcLog()->warn("malformed batch, stream refused peer={} {} problem=\"{}\"", peer.address,
                     peer.describe(), problem);
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, problem);
    }
    stream.agent_id = record.agent_id();
    previous = record.sequence();
  }
  return grpc::Status::OK;
}

std::shared_ptr<BatchHandler::AgentEntry> BatchHandler::entryFor(const std::string& agent_id) {
  std::lock_guard lock(agents_mutex_);
  auto& entry = agents_[canonicalHostName(agent_id)];
  if (!entry) {
    entry = std::make_shared<AgentEntry>();
  }
  return entry;
}

Status BatchHandler::loadMark(const std::string& agent_id, AgentEntry& entry) {
  if (entry.mark) {
    return {};
  }
  auto loaded = store_.load(agent_id);
  if (!loaded) {
    return loaded.error();
  }
  entry.mark = *loaded;
  return {};
}

Result<AgentMark> BatchHandler::mark(const std::string& agent_id) {
  auto entry = entryFor(agent_id);
  std::lock_guard lock(entry->mutex);
  if (auto loaded = loadMark(agent_id, *entry); !loaded) {
    return loaded.error();
  }
  return *entry->mark;
}

BatchOutcome BatchHandler::handle(StreamState& stream, const ExportRequest& request) {
  ++stats_.batches;
  if (auto refused = check(stream, request); !refused.ok()) {
    return {refused, 0};
  }

  // A request without records names no agent; it is answered for the certificate's host.
  const std::string& agent_id =
      stream.agent_id.empty() ? stream.peer.primaryName() : stream.agent_id;
  if (agent_id.empty()) {
    return {grpc::Status::OK, 0};
  }
  auto entry = entryFor(agent_id);
  std::lock_guard lock(entry->mutex);
  if (auto loaded = loadMark(agent_id, *entry); !loaded) {
    ++stats_.streams_failed_storage;
    collectorLog()->error("cannot read agent state, stream ended agent={} err={}", agent_id,
                          loaded.error().message());
    return {grpc::Status(grpc::StatusCode::UNAVAILABLE, "collector cannot read its state"), 0};
  }
  return store(agent_id, *entry, request);
}

BatchOutcome BatchHandler::store(const std::string& agent_id, AgentEntry& entry,
                                 const ExportRequest& request) {
  AgentMark& mark = *entry.mark;
  Novelty novelty = sortOut(request, mark.sequence);
  auto unavailable = [&](std::string_view what, const Error& error) {
    ++stats_.streams_failed_storage;
    collectorLog()->error("{}, batch not acknowledged agent={} records={} err={}", what, agent_id,
                          novelty.fresh.size(), error.message());
    return BatchOutcome{grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                     "collector cannot store records now; send them again"),
                        mark.sequence};
  };

  // LIMITATION: outputs and the mark are not written atomically together. A crash between the
  // file writes and the mark's rename, or a failure of one file output after another took the
  // batch, makes the agent's resend write the batch again where it already is; consumers
  // deduplicate on record_id. Closing that needs a per-output mark or a replay of the files'
  // tails at start.
  if (!novelty.fresh.empty()) {
    for (Output* output : outputs_) {
      if (auto written = output->write(novelty.fresh); !written) {
        return unavailable("output write failed", written.error());
      }
    }
  }

  AgentMark next = mark;
  if (!novelty.fresh.empty()) {
    next.sequence = novelty.fresh.back()->sequence();
  }
  next.dropped_total = request.dropped_total();
  if (next != mark) {
    if (auto saved = store_.save(agent_id, next); !saved) {
      return unavailable("cannot persist agent state", saved.error());
    }
  }

  noteDrops(agent_id, mark, request.dropped_total());
  if (novelty.gaps > 0) {
    stats_.sequence_gaps += novelty.gaps;
    stats_.sequence_missing += novelty.missing;
    collectorLog()->warn("sequence gap agent={} first_missing={} gaps={} missing={}", agent_id,
                         novelty.first_missing, novelty.gaps, novelty.missing);
  }
  stats_.records_stored += novelty.fresh.size();
  stats_.records_duplicate += novelty.duplicates;
  if (novelty.duplicates > 0) {
    rpcLog()->debug("duplicates acknowledged agent={} duplicates={} stored_sequence={}", agent_id,
                    novelty.duplicates, mark.sequence);
  }
  mark = next;
  rpcLog()->trace("batch stored agent={} records={} acknowledged_sequence={}", agent_id,
                  novelty.fresh.size(), mark.sequence);
  return {grpc::Status::OK, mark.sequence};
}

void BatchHandler::noteDrops(const std::string& agent_id, const AgentMark& mark,
                             uint64_t dropped_total) {
  if (dropped_total > mark.dropped_total) {
    uint64_t dropped = dropped_total - mark.dropped_total;
    stats_.agent_dropped += dropped;
    collectorLog()->warn("agent reports dropped records agent={} dropped={} dropped_total={}",
                         agent_id, dropped, dropped_total);
  }
}

}  // namespace mseg::collector
