#include "logging.hpp"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <bpf/libbpf.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/systemd_sink.h>

namespace mseg::agent {
namespace {

constexpr const char* kLoggerNames[] = {"agent", "bpf", "policy", "rpc"};

// systemd sets JOURNAL_STREAM when stderr is connected to the journal.
bool underJournal() { return std::getenv("JOURNAL_STREAM") != nullptr; }

// Under systemd, lines go to the journal natively: it stores the priority and its own
// timestamp, so the line carries neither.
spdlog::sink_ptr sharedSink() {
  static spdlog::sink_ptr sink = [] () -> spdlog::sink_ptr {
    if (underJournal()) {
      auto journal = std::make_shared<spdlog::sinks::systemd_sink_mt>("microsegd");
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

}  // namespace mseg::agent
