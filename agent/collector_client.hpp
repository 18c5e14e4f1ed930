// Streams spooled flow records to microseg-collector over gRPC with mutual TLS, and forgets
// them once the collector acknowledges them. Runs on its own thread; reconnects with backoff
// while the collector is away, and resumes after the last acknowledged record, so the
// collector receives every spooled record exactly once.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "mseg/result.hpp"
#include "spool.hpp"

namespace grpc {
class ClientContext;
}

namespace mseg::agent {

struct CollectorSettings {
  std::string address;  // host:port
  std::string ca_file;  // CA that signed the collector's certificate
  std::string cert_file;  // this agent's certificate (names this host)
  std::string key_file;
  std::string server_name;  // expected name in the collector's certificate; empty: from address
  std::string host;  // this host's name as configured now; stamped on every record sent
};

class CollectorClient {
public:
  // Reads the credentials; fails naming the file that cannot be read.
  static Result<std::unique_ptr<CollectorClient>> create(const CollectorSettings& settings,
                                                         Spool& spool);
  ~CollectorClient();

  void start();
  // Stops the thread, cancelling a stream in flight. Spooled records stay for the next run.
  void stop();
  // Wakes the sender: records were spooled.
  void notify();

  bool connected() const { return connected_; }
  // Attempts to reach the collector that failed since the stream was last up.
  uint64_t failedAttempts() const { return failed_attempts_; }
  uint64_t batchesSent() const { return batches_sent_; }

private:
  CollectorClient(CollectorSettings settings, Spool& spool)
      : settings_(std::move(settings)), spool_(spool) {}
  void run();
  Status streamOnce();
  void reportFailure(const Error& error);
  void waitForRecords(std::chrono::milliseconds timeout);

  CollectorSettings settings_;
  std::string ca_pem_;
  std::string cert_pem_;
  std::string key_pem_;
  Spool& spool_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> connected_{false};
  std::atomic<uint64_t> batches_sent_{0};
  // Failed attempts since the last warning about them (the run thread's alone).
  std::atomic<uint64_t> failed_attempts_{0};
  uint64_t failures_unreported_ = 0;
  std::chrono::steady_clock::time_point last_failure_report_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool pending_ = false;
  grpc::ClientContext* active_context_ = nullptr;  // guarded by mutex_
};

}  // namespace mseg::agent
