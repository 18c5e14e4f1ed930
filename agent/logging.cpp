#include "logging.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <utility>

#include <bpf/libbpf.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

namespace mseg::agent {
namespace {

constexpr const char* kLoggerNames[] = {"agent", "bpf", "policy", "rpc"};

// Whether stderr is the journal's stream. systemd sets JOURNAL_STREAM to the "device:inode"
// of the stream it connected; a process whose stderr was redirected elsewhere may still
// inherit the variable, so it counts only when it names our stderr (systemd.exec(5)).
bool stderrIsJournal() {
  const char* value = std::getenv("JOURNAL_STREAM");
  unsigned long long device = 0;
  unsigned long long inode = 0;
  struct stat info {};
  return value != nullptr && std::sscanf(value, "%llu:%llu", &device, &inode) == 2 &&
         fstat(STDERR_FILENO, &info) == 0 && info.st_dev == device && info.st_ino == inode;
}

// The syslog priority journald reads from a "<N>" line prefix (SyslogLevelPrefix=, on by
// default): it becomes the entry's level.
int syslogPriority(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::critical:
      return 2;
    case spdlog::level::err:
      return 3;
    case spdlog::level::warn:
      return 4;
    case spdlog::level::info:
      return 6;
    default:
      return 7;
  }
}

// Lines for the journal's stdout/stderr stream: the priority as a prefix and no timestamp
// (the journal stamps each entry itself). Writing to the stream rather than the journal's
// socket keeps every line even where journald runs without that socket.
class JournalStreamSink : public spdlog::sinks::base_sink<std::mutex> {
protected:
  void sink_it_(const spdlog::details::log_msg& message) override {
    spdlog::memory_buf_t text;
    formatter_->format(message, text);
    std::fprintf(stderr, "<%d>%.*s", syslogPriority(message.level),
                 static_cast<int>(text.size()), text.data());
  }
  void flush_() override { std::fflush(stderr); }
};

spdlog::sink_ptr sharedSink() {
  static spdlog::sink_ptr sink = [] () -> spdlog::sink_ptr {
    if (stderrIsJournal()) {
      auto journal = std::make_shared<JournalStreamSink>();
      journal->set_pattern("%n: %v");
      return journal;
    }
    auto terminal = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    terminal->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %n: %v");
    return terminal;
  }();
  return sink;
}

// libbpf prints verifier logs and load failures through this hook; they belong in the `bpf`
// logger, at debug unless libbpf calls them warnings.
int libbpfPrint(enum libbpf_print_level level, const char* format, va_list args) {
  // Verifier logs arrive as one message of many kilobytes: size the buffer to fit.
  va_list measure;
  va_copy(measure, args);
  int length = std::vsnprintf(nullptr, 0, format, measure);
  va_end(measure);
  if (length < 0) {
    return 0;
  }
  std::string text(static_cast<size_t>(length) + 1, '\0');
  std::vsnprintf(text.data(), text.size(), format, args);
  text.resize(static_cast<size_t>(length));
  while (!text.empty() && text.back() == '\n') {
    text.pop_back();
  }
  auto log = logger("bpf");
  if (level == LIBBPF_WARN) {
    log->warn("{}", text);
  } else {
    log->trace("{}", text);
  }
  return 0;
}

}  // namespace

std::shared_ptr<spdlog::logger> logger(const char* name) {
  if (auto existing = spdlog::get(name)) {
    return existing;
  }
  auto created = std::make_shared<spdlog::logger>(name, sharedSink());
  created->set_level(spdlog::get_level());
  spdlog::register_logger(created);
  return created;
}

void setUpLogging(std::string_view level) {
  spdlog::set_level(spdlog::level::from_str(std::string(level)));
  for (const char* name : kLoggerNames) {
    logger(name)->set_level(spdlog::get_level());
  }
  libbpf_set_print(libbpfPrint);
}

bool RepeatedProblem::due(Clock::time_point now) {
  if (logged_ && now - logged_at_ < interval_) {
    return false;
  }
  logged_ = true;
  logged_at_ = now;
  return true;
}

bool RepeatedProblem::ended() { return std::exchange(logged_, false); }

}  // namespace mseg::agent
