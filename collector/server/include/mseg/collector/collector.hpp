// microseg-collector as a library: the mutual-TLS gRPC server agents stream flow records to,
// its worker threads and its outputs. main() and the tests both run it through this class.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mseg/collector/batch_handler.hpp"
#include "mseg/collector/config.hpp"
#include "mseg/result.hpp"

namespace mseg::collector {

struct NamedOutputStats {
  std::string name;
  OutputStats stats;
};

// What makes the TLS files of `config` unusable (the server's, and each syslog output's over
// TLS), one message per problem naming the setting, the file and the cause; empty when all
// are usable. `--check-config` checks the dates too (`valid_at`): an expired certificate.
std::vector<std::string> checkTlsFiles(const CollectorConfig& config,
                                       std::optional<std::chrono::system_clock::time_point>
                                           valid_at);

class Collector {
public:
  // Opens the state directory and every output, loads the TLS files and starts serving on
  // config.listen. Fails naming the file, output or address that did not work; nothing is left
  // running then.
  //
  // Threading: gRPC's callback API runs the streams; no thread is tied to a stream. Reading a
  // request and writing its response are reactions on gRPC's threads, which must not block, so
  // each request is handed to one of config.limits.workers threads that does the blocking work
  // (files, fsync, state). Each stream has at most one request in flight, which keeps an
  // agent's batches in order and lets a slow disk push back on agents through HTTP/2 flow
  // control instead of through memory.
  static Result<std::unique_ptr<Collector>> start(const CollectorConfig& config);

  // Stops accepting streams, gives open streams up to 5 seconds to finish the batch in hand,
  // then stops the workers and the outputs (syslog queues get up to 2 seconds to drain).
  ~Collector();

  // The port the server listens on (the one chosen when config.listen asked for port 0).
  int port() const;

  const IngestStats& stats() const;
  std::vector<NamedOutputStats> outputStats() const;

  // One line of every counter, "streams_active=1 records_stored=10 ...", for the periodic log.
  std::string describeStats() const;

  class Impl;

private:
  explicit Collector(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
};

}  // namespace mseg::collector
