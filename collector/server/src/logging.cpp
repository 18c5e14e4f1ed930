#include "mseg/collector/logging.hpp"

#include <grpc/support/log.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <chrono>
#include <cstdlib>
#include <mutex>
#include <string>

namespace mseg::collector {
namespace {

std::shared_ptr<spdlog::logger> namedLogger(const char* name) {
  // spdlog's registry is thread-safe, but two threads may both miss and both create.
  static std::mutex creating;
  std::lock_guard lock(creating);
  if (auto existing = spdlog::get(name)) {
    return existing;
  }
  static auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto created = std::make_shared<spdlog::logger>(name, sink);
  created->set_level(spdlog::get_level());
  spdlog::register_logger(created);
  return created;
}

// gRPC's own messages (a failed TLS handshake, for one) come once per connection attempt, and
// a misconfigured or hostile client makes one a second or more: at most kBurst lines per kWindow
// pass, and the next line that passes says how many were held back. The window is long enough
// that a client retrying every second is held back too.
constexpr auto kWindow = std::chrono::minutes(1);
constexpr int kBurst = 3;

// LIMITATION: gRPC 1.51 passes no peer address with a failed handshake's message, so the line
// cannot name the client (docs/limitations.md).
void logGrpcMessage(gpr_log_func_args* args) {
  static std::mutex mutex;
  static std::chrono::steady_clock::time_point window_start;
  static int in_window = 0;
  static uint64_t suppressed = 0;

  std::lock_guard lock(mutex);
  auto now = std::chrono::steady_clock::now();
  if (now - window_start >= kWindow) {
    window_start = now;
    in_window = 0;
  }
  if (++in_window > kBurst) {
    ++suppressed;
    return;
  }
  // gRPC reports per-connection problems as errors; the collector keeps serving everyone else,
  // which is what warn means here.
  auto level =
      args->severity == GPR_LOG_SEVERITY_ERROR ? spdlog::level::warn : spdlog::level::debug;
  rpcLog()->log(level, "grpc: {} suppressed_before={}", args->message, suppressed);
  suppressed = 0;
}

}  // namespace

std::shared_ptr<spdlog::logger> collectorLog() {
  static auto log = namedLogger("collector");
  return log;
}

std::shared_ptr<spdlog::logger> rpcLog() {
  static auto log = namedLogger("rpc");
  return log;
}

void setUpLogging(std::string_view level) {
  spdlog::set_level(spdlog::level::from_str(std::string(level)));
  bool journal = std::getenv("JOURNAL_STREAM") != nullptr;
  for (const auto& log : {collectorLog(), rpcLog()}) {
    log->set_level(spdlog::get_level());
    log->set_pattern(journal ? "%l %n: %v" : "%Y-%m-%dT%H:%M:%S.%e %l %n: %v");
  }
  gpr_set_log_function(logGrpcMessage);
}

}  // namespace mseg::collector
