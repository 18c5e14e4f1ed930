// The syslog output: RFC 5424 messages carrying CEF or OCSF JSON, sent over TCP or TLS with
// octet-counting framing (RFC 6587 section 3.4.1) from a bounded in-memory queue.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "mseg/collector/config.hpp"
#include "mseg/collector/output.hpp"

namespace mseg::collector {

class SyslogConnection;
class SyslogTlsContext;

// Not durable: write() only queues. One thread per output connects, sends and reconnects with
// exponential backoff (reconnect_initial_ms doubling up to reconnect_max_ms). Messages whose
// send failed stay queued and are sent again on the next connection, so a message may arrive
// twice (at least once) while the queue has room; when it is full, new messages are dropped,
// counted in queue_overflow and logged. LIMITATION: messages the kernel accepted just before a
// connection broke can be lost unnoticed: plain syslog has no acknowledgements (RELP would).
class SyslogOutput final : public Output {
public:
  // Loads the TLS files and starts the sending thread; the first connection is made in the
  // background, so an unreachable server delays nothing. Ignores SIGPIPE process-wide, since
  // OpenSSL writes to the socket without MSG_NOSIGNAL.
  static Result<std::unique_ptr<SyslogOutput>> start(const SyslogOutputConfig& config);
  ~SyslogOutput() override;

  const std::string& name() const override { return config_.name; }
  bool durable() const override { return false; }

  // Renders and queues one message per record; never fails.
  Status write(std::span<const FlowRecord* const> records) override;

  void stop(uint32_t deadline_ms) override;
  OutputStats stats() const override;

private:
  using Clock = std::chrono::steady_clock;

  explicit SyslogOutput(SyslogOutputConfig config);
  void run();
  bool ensureConnected(std::unique_lock<std::mutex>& lock);
  void sendSome(std::unique_lock<std::mutex>& lock);
  void warnOverflow(Clock::time_point now);

  const SyslogOutputConfig config_;
  std::shared_ptr<SyslogTlsContext> tls_;
  std::thread thread_;

  mutable std::mutex mutex_;  // guards everything below
  std::condition_variable wake_;
  std::deque<std::string> queue_;  // framed messages, oldest first
  std::unique_ptr<SyslogConnection> connection_;
  bool stopping_ = false;
  bool exited_ = false;
  Clock::time_point stop_deadline_;
  std::chrono::milliseconds backoff_{0};
  Clock::time_point next_attempt_;
  std::string last_connect_error_;
  bool ever_connected_ = false;
  uint64_t overflow_unreported_ = 0;
  Clock::time_point overflow_reported_at_;
  OutputStats stats_;
};

}  // namespace mseg::collector
