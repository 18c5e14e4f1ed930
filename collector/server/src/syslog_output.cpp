#include "mseg/collector/syslog_output.hpp"

#include <fmt/format.h>

#include <csignal>

#include "mseg/collector/logging.hpp"
#include "mseg/format/syslog.hpp"
#include "syslog_connection.hpp"

namespace mseg::collector {
namespace {

using std::chrono::milliseconds;

// Also the send and receive timeout of an open connection: a server that stops reading for
// this long is treated as gone.
constexpr milliseconds kConnectTimeout{5000};
// One send() carries at most this much, so that a failure resends a bounded amount.
constexpr size_t kSendChunkBytes = 256 * 1024;
constexpr std::chrono::seconds kOverflowReportInterval{10};

std::string target(const SyslogOutputConfig& config) {
  return fmt::format("{}://{}:{}", config.transport == SyslogTransport::kTls ? "tls" : "tcp",
                     config.host, config.port);
}

}  // namespace

Result<std::unique_ptr<SyslogOutput>> SyslogOutput::start(const SyslogOutputConfig& config) {
  std::unique_ptr<SyslogOutput> output(new SyslogOutput(config));
  if (config.transport == SyslogTransport::kTls) {
    auto tls = SyslogTlsContext::create(config);
    if (!tls) {
      return tls.error().wrap("output " + config.name);
    }
    output->tls_ = std::move(*tls);
  }

  std::signal(SIGPIPE, SIG_IGN);
  output->thread_ = std::thread([raw = output.get()] { raw->run(); });
  return output;
}

SyslogOutput::SyslogOutput(SyslogOutputConfig config) : config_(std::move(config)) {}

SyslogOutput::~SyslogOutput() { stop(0); }

Status SyslogOutput::write(std::span<const FlowRecord* const> records) {
  format::SyslogOptions options;
  options.facility = config_.facility;
  std::vector<std::string> frames;
  frames.reserve(records.size());
  for (const FlowRecord* record : records) {
    frames.push_back(
        format::frameOctetCounted(format::renderSyslog(*record, config_.payload, options)));
  }

  std::lock_guard lock(mutex_);
  if (stopping_) {
    stats_.queue_overflow += frames.size();
    return {};
  }
  for (auto& frame : frames) {
    if (queue_.size() >= config_.queue_messages) {
      ++stats_.queue_overflow;
      ++overflow_unreported_;
      continue;
    }
    queue_.push_back(std::move(frame));
  }
  stats_.queued = queue_.size();
  warnOverflow(Clock::now());
  wake_.notify_all();
  return {};
}

void SyslogOutput::warnOverflow(Clock::time_point now) {
  if (overflow_unreported_ == 0 || now - overflow_reported_at_ < kOverflowReportInterval) {
    return;
  }
  collectorLog()->warn("syslog queue full, dropping output={} target={} dropped={} total={}",
                       config_.name, target(config_), overflow_unreported_, stats_.queue_overflow);
  overflow_unreported_ = 0;
  overflow_reported_at_ = now;
}

void SyslogOutput::run() {
  std::unique_lock lock(mutex_);
  while (true) {
    wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    // At stop, what is queued may still leave over a working connection until the deadline;
    // no new connection is attempted.
    if (stopping_ && (queue_.empty() || Clock::now() >= stop_deadline_ || connection_ == nullptr ||
                      connection_->closedByPeer())) {
      break;
    }
    if (ensureConnected(lock)) {
      sendSome(lock);
    }
  }

  if (!queue_.empty()) {
    collectorLog()->warn("syslog output stopped with unsent messages output={} target={} lost={}",
                         config_.name, target(config_), queue_.size());
    stats_.errors += queue_.size();
    queue_.clear();
    stats_.queued = 0;
  }
  connection_.reset();
  stats_.connected = false;
  exited_ = true;
  wake_.notify_all();
}

bool SyslogOutput::ensureConnected(std::unique_lock<std::mutex>& lock) {
  if (connection_ != nullptr && !connection_->closedByPeer()) {
    return true;
  }
  if (connection_ != nullptr) {
    connection_.reset();
    stats_.connected = false;
    ++stats_.errors;
    collectorLog()->warn("syslog server closed the connection output={} target={} queued={}",
                         config_.name, target(config_), queue_.size());
  }
  if (Clock::now() < next_attempt_) {
    wake_.wait_until(lock, next_attempt_, [&] { return stopping_; });
    return false;
  }

  lock.unlock();
  auto opened = SyslogConnection::open(config_, tls_, kConnectTimeout);
  lock.lock();

  if (!opened) {
    ++stats_.connect_failures;
    backoff_ = backoff_.count() == 0
                   ? milliseconds(config_.reconnect_initial_ms)
                   : std::min(backoff_ * 2, milliseconds(config_.reconnect_max_ms));
    next_attempt_ = Clock::now() + backoff_;
    // The same failure again is news only at debug: an unreachable server would otherwise
    // log a line per attempt.
    if (opened.error().message() != last_connect_error_) {
      collectorLog()->warn("syslog connect failed output={} target={} retry_ms={} err={}",
                           config_.name, target(config_), backoff_.count(),
                           opened.error().message());
      last_connect_error_ = opened.error().message();
    } else {
      collectorLog()->debug("syslog connect failed output={} target={} retry_ms={} err={}",
                            config_.name, target(config_), backoff_.count(),
                            opened.error().message());
    }
    return false;
  }

  connection_ = std::move(*opened);
  stats_.connected = true;
  if (ever_connected_) {
    ++stats_.reconnects;
  }
  ever_connected_ = true;
  last_connect_error_.clear();
  collectorLog()->info("syslog connected output={} target={}", config_.name, target(config_));
  return true;
}

void SyslogOutput::sendSome(std::unique_lock<std::mutex>& lock) {
  // Frames leave the queue only once sent: a failed send keeps them for the next connection.
  std::string chunk;
  size_t count = 0;
  for (const auto& frame : queue_) {
    if (count > 0 && chunk.size() + frame.size() > kSendChunkBytes) {
      break;
    }
    chunk += frame;
    ++count;
  }

  SyslogConnection* connection = connection_.get();
  lock.unlock();
  Status sent = connection->send(chunk);
  lock.lock();

  if (sent) {
    queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(count));
    stats_.records += count;
    stats_.queued = queue_.size();
    backoff_ = milliseconds(0);
    return;
  }
  connection_.reset();
  stats_.connected = false;
  ++stats_.errors;
  collectorLog()->warn("syslog send failed, will resend output={} target={} queued={} err={}",
                       config_.name, target(config_), queue_.size(), sent.error().message());
}

void SyslogOutput::stop(uint32_t deadline_ms) {
  std::unique_lock lock(mutex_);
  if (!thread_.joinable()) {
    return;
  }
  stopping_ = true;
  stop_deadline_ = Clock::now() + milliseconds(deadline_ms);
  wake_.notify_all();
  // A send blocked on a server that stopped reading holds the thread up to kConnectTimeout;
  // shutting the socket down ends it sooner.
  if (!wake_.wait_until(lock, stop_deadline_ + milliseconds(100), [&] { return exited_; }) &&
      connection_ != nullptr) {
    connection_->abort();
  }
  warnOverflow(Clock::now() + kOverflowReportInterval);
  lock.unlock();
  thread_.join();
}

OutputStats SyslogOutput::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

}  // namespace mseg::collector
