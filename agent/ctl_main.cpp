// microsegctl: the operator's command-line tool. See `microsegctl help`.
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "config.hpp"
#include "datapath.hpp"
#include "reasons.hpp"
#include "mseg/policy/compiler.hpp"

namespace {

using mseg::agent::reasonName;
using mseg::agent::verdictName;

constexpr const char* kDefaultPinDir = "/sys/fs/bpf/microseg";

constexpr const char* kUsage = R"(usage: microsegctl COMMAND [options]

commands:
  policy validate FILE       check a policy file; exit 0 when valid, 1 when it has errors
  counters [--pin-dir DIR | --config FILE]
                             per-rule verdict counters of the running datapath
  uninstall [--pin-dir DIR | --config FILE]
                             detach microseg's programs and remove everything it pinned
                             (refused while a microsegd uses the pin directory)
  help                       print this help

--config FILE reads pin_dir from microsegd's configuration file (/etc/microseg/microsegd.yaml
in the package); the default pin directory is /sys/fs/bpf/microseg.
)";

// The pin directory of `COMMAND [--pin-dir DIR | --config FILE]`; nullopt after printing what
// is wrong with the rest of the arguments or the configuration file.
std::optional<std::string> pinDirArgument(const std::vector<std::string>& args) {
  if (args.size() == 1) {
    return std::string(kDefaultPinDir);
  }
  if (args.size() == 3 && args[1] == "--pin-dir" && !args[2].empty()) {
    return args[2];
  }
  if (args.size() == 3 && args[1] == "--config" && !args[2].empty()) {
    mseg::agent::AgentConfig config;
    if (auto loaded = mseg::agent::loadConfigFile(args[2], config); !loaded) {
      std::fprintf(stderr, "microsegctl: %s\n", loaded.error().message().c_str());
      return std::nullopt;
    }
    return config.pin_dir;
  }
  std::fprintf(stderr, "microsegctl: usage: microsegctl %s [--pin-dir DIR | --config FILE]\n",
               args[0].c_str());
  return std::nullopt;
}

int validatePolicy(const std::string& path) {
  mseg::policy::Diagnostics diagnostics;
  auto compiled = mseg::policy::loadPolicyFile(path, diagnostics);
  if (!diagnostics.all().empty()) {
    std::fputs(diagnostics.format().c_str(), stderr);
  }
  if (!compiled) {
    // The diagnostics above name the file; the summary only says what became of it.
    std::fprintf(stderr, "invalid policy: %s\n", compiled.error().message().c_str());
    return 1;
  }
  std::printf("%s: valid: %zu workloads, %zu inventory entries, %zu rules, %zu verdict entries\n",
              path.c_str(), compiled->workloads.size(), compiled->peers.size(),
              compiled->rules.size(), compiled->entries.size());
  return 0;
}

int showCounters(const std::string& pin_dir) {
  auto counters = mseg::agent::readPinnedCounters(pin_dir);
  if (!counters) {
    std::fprintf(stderr, "microsegctl: %s\n", counters.error().message().c_str());
    return 1;
  }
  fmt::print("policy version {}\n\n{:<44} {:<8} {:>12}\n", counters->policy_version, "RULE",
             "VERDICT", "HITS");
  for (const auto& [id, rule] : counters->rule_names) {
    auto hits = counters->rule_hits.find(id);
    fmt::print("{:<44} {:<8} {:>12}\n", rule.name, verdictName(rule.verdict),
               hits == counters->rule_hits.end() ? 0 : hits->second);
  }
  fmt::print("\n{:<44} {:>21}\n", "DATAPATH REASON", "COUNT");
  for (size_t reason = 0; reason < counters->reasons.size(); reason++) {
    if (const char* name = reasonName(reason)) {
      fmt::print("{:<44} {:>21}\n", name, counters->reasons[reason]);
    }
  }
  return 0;
}

int uninstall(const std::string& pin_dir) {
  auto removed = mseg::agent::uninstallDatapath(pin_dir);
  if (!removed && removed.error().code() == ENOENT) {
    std::printf("%s\n", removed.error().message().c_str());
    return 0;
  }
  if (!removed) {
    std::fprintf(stderr, "microsegctl: %s\n", removed.error().message().c_str());
    return 1;
  }
  std::printf("removed %s: microseg programs detached, maps unpinned\n", pin_dir.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "help" || args[0] == "--help") {
    std::fputs(kUsage, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "policy") {
    if (args.size() == 3 && args[1] == "validate") {
      return validatePolicy(args[2]);
    }
    std::fputs("microsegctl: usage: microsegctl policy validate FILE\n", stderr);
    return 2;
  }
  if (args[0] == "counters" || args[0] == "uninstall") {
    auto pin_dir = pinDirArgument(args);
    if (!pin_dir) {
      return 2;
    }
    return args[0] == "counters" ? showCounters(*pin_dir) : uninstall(*pin_dir);
  }
  std::fprintf(stderr, "microsegctl: unknown command `%s`; see `microsegctl help`\n",
               args[0].c_str());
  return 2;
}
