// microseg-collector: receives flow records from microsegd agents over mutual TLS and stores
// them exactly once in its outputs. See `microseg-collector --help` and docs/collector.md.
#include <getopt.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <string>

#include "mseg/collector/collector.hpp"
#include "mseg/collector/logging.hpp"

#ifndef MSEG_VERSION
#define MSEG_VERSION "unknown"
#endif

namespace {

constexpr const char* kUsage = R"(usage: microseg-collector --config FILE [options]

Receives connection telemetry from microsegd agents over gRPC with mutual TLS and writes each
record exactly once to the outputs of the configuration file (OCSF JSON files, syslog).

options:
  --config FILE       YAML configuration (see docs/collector.md)
  --check-config      validate the configuration, print its problems and exit
  --log-level LEVEL   trace, debug, info, warn, error (overrides log_level in the file)
  --version           print the version and exit
  --help              print this help and exit

exit status: 0 stopped by SIGTERM or SIGINT (or configuration valid), 1 could not start,
2 bad command line or configuration.
)";

struct CommandLine {
  std::string config_path;
  std::string log_level;
  bool check_only = false;
  bool show_help = false;
  bool show_version = false;
};

enum Option { kConfig = 1000, kCheckConfig, kLogLevel, kVersion, kHelp };

const option kOptions[] = {
    {"config", required_argument, nullptr, kConfig},
    {"check-config", no_argument, nullptr, kCheckConfig},
    {"log-level", required_argument, nullptr, kLogLevel},
    {"version", no_argument, nullptr, kVersion},
    {"help", no_argument, nullptr, kHelp},
    {nullptr, 0, nullptr, 0},
};

// nullptr and a message in `error` when argv is not usable.
bool parseCommandLine(int argc, char** argv, CommandLine& command, std::string& error) {
  opterr = 0;
  for (int option; (option = getopt_long(argc, argv, "", kOptions, nullptr)) != -1;) {
    switch (option) {
      case kConfig:
        command.config_path = optarg;
        break;
      case kCheckConfig:
        command.check_only = true;
        break;
      case kLogLevel:
        command.log_level = optarg;
        break;
      case kVersion:
        command.show_version = true;
        break;
      case kHelp:
        command.show_help = true;
        break;
      default:
        error =
            std::string("unknown option or missing value: ") + argv[optind - 1] + " (see --help)";
        return false;
    }
  }
  if (optind < argc) {
    error = std::string("unexpected argument: ") + argv[optind] + " (see --help)";
    return false;
  }
  if (command.config_path.empty() && !command.show_help && !command.show_version) {
    error = "no configuration given: pass --config FILE";
    return false;
  }
  const std::string& level = command.log_level;
  if (!level.empty() && level != "trace" && level != "debug" && level != "info" &&
      level != "warn" && level != "error") {
    error = "--log-level " + level + ": expected trace, debug, info, warn or error";
    return false;
  }
  return true;
}

// Waits for SIGTERM or SIGINT (blocked in every thread), logging counter changes every
// `interval_s` seconds meanwhile. Returns the signal.
int serveUntilSignal(const mseg::collector::Collector& collector, uint32_t interval_s,
                     const sigset_t& signals) {
  auto log = mseg::collector::collectorLog();
  std::string last_stats;
  while (true) {
    timespec timeout{interval_s == 0 ? 3600 : static_cast<time_t>(interval_s), 0};
    int signal = sigtimedwait(&signals, nullptr, &timeout);
    if (signal > 0) {
      return signal;
    }
    if (interval_s == 0) {
      continue;
    }
    std::string stats = collector.describeStats();
    if (stats != last_stats) {
      log->info("stats {}", stats);
      last_stats = std::move(stats);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  CommandLine command;
  std::string error;
  if (!parseCommandLine(argc, argv, command, error)) {
    std::fprintf(stderr, "microseg-collector: %s\n", error.c_str());
    return 2;
  }
  if (command.show_help) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (command.show_version) {
    std::printf("microseg-collector %s\n", MSEG_VERSION);
    return 0;
  }

  auto config = mseg::collector::loadConfig(command.config_path);
  if (!config) {
    std::fprintf(stderr, "%s", config.error().message().c_str());
    return 2;
  }
  for (const auto& warning : config->warnings) {
    std::fprintf(stderr, "%s\n", warning.c_str());
  }
  if (command.check_only) {
    // The certificates too: a configuration that names unusable ones would only fail at
    // start, or at the first handshake.
    auto problems =
        mseg::collector::checkTlsFiles(*config, std::chrono::system_clock::now());
    for (const auto& problem : problems) {
      std::fprintf(stderr, "%s: %s\n", command.config_path.c_str(), problem.c_str());
    }
    if (!problems.empty()) {
      return 2;
    }
    std::printf("%s: valid, %zu outputs\n", command.config_path.c_str(), config->outputs.size());
    return 0;
  }
  if (!command.log_level.empty()) {
    config->log_level = command.log_level;
  }

  // Blocked before any thread starts, so that every thread inherits the mask and only
  // sigtimedwait below receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  mseg::collector::setUpLogging(config->log_level);
  auto log = mseg::collector::collectorLog();
  log->info("starting version={} config={}", MSEG_VERSION, command.config_path);
  auto collector = mseg::collector::Collector::start(*config);
  if (!collector) {
    log->critical("cannot start: {}", collector.error().message());
    return 1;
  }

  int signal = serveUntilSignal(**collector, config->stats_interval_s, signals);
  log->info("stopping signal={}", sigabbrev_np(signal));
  collector->reset();
  log->info("stopped");
  return 0;
}
