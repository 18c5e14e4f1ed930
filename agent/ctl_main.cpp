// microsegctl: the operator's command-line tool. See `microsegctl help` and docs/operations-cli.md.
//
// Exit codes: 0 done (nothing to report), 1 a failure or a finding (an invalid policy, a diff
// with changes, an agent whose last reload was refused, no agent), 2 a malformed command line.
#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "config.hpp"
#include "control_limits.hpp"
#include "ctl_client.hpp"
#include "ctl_output.hpp"
#include "datapath.hpp"
#include "mseg/policy/compiler.hpp"
#include "mseg/policy/source.hpp"
#include "reasons.hpp"
#include "status_file.hpp"

namespace {

using mseg::agent::reasonName;
using mseg::agent::verdictName;
namespace ctl = mseg::ctl;
namespace cv1 = microseg::control::v1;

constexpr unsigned kDefaultLastFlows = 20;

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

constexpr const char* kUsage = R"(usage: microsegctl COMMAND [options]

commands that ask the running agent (over --socket PATH, default /run/microseg/microsegd.sock):
  status                       version, attach point, policy, modes, counters, drops, exporter,
                               last reload and last error; exit 1 when the last reload failed
  policy diff FILE|DIR         rules added, removed, changed and the paths that would open or
                               close against the running policy; exit 1 when anything changes
  policy trace --from WORKLOAD|ADDRESS --to WORKLOAD|ADDRESS --proto tcp|udp|icmp [--port N]
                               the verdict and the rule that decides it (ICMP: --port is the type)
  flows [--follow] [--verdict allowed|denied|audit] [--workload NAME] [--last N]
                               recent flows (the last 20 by default), and new ones with --follow
  workloads                    the cgroups each workload selects, and cgroups no workload selects

commands that work without an agent:
  policy validate FILE|DIR     check a policy file or directory; exit 0 when valid, 1 when it
                               has errors
  counters [-o json] [--pin-dir DIR | --config FILE]
                               per-rule verdict counters of the pinned datapath
  uninstall [-o json] [--pin-dir DIR | --config FILE]
                               detach microseg's programs and remove everything it pinned
                               (refused while a microsegd uses the pin directory)
  help                         print this help

options: -o json (or --output json) prints JSON for scripts instead of tables (flows: one
object per line). --config FILE reads control_socket and pin_dir from microsegd's
configuration file (/etc/microseg/microsegd.yaml in the package); --socket PATH and
--pin-dir DIR name them directly. Defaults: /run/microseg/microsegd.sock, /sys/fs/bpf/microseg.
These options may also come before the command: microsegctl --socket PATH status.
)";

// A command line after the command words: options by name, then positional arguments.
struct Arguments {
  std::map<std::string, std::string> values;
  std::set<std::string> switches;
  std::vector<std::string> positional;

  std::string value(const std::string& name, const std::string& fallback = "") const {
    auto found = values.find(name);
    return found == values.end() ? fallback : found->second;
  }
  bool json() const { return value("--output") == "json"; }
  // From --socket, else --config's control_socket, else the default.
  std::string socket() const { return value("--socket", config.control_socket); }
  // From --pin-dir, else --config's pin_dir, else the default.
  std::string pinDir() const { return value("--pin-dir", config.pin_dir); }

  mseg::agent::AgentConfig config;  // --config FILE, or the agent's defaults
};

struct Grammar {
  std::string usage;                  // the command's usage line, printed on mistakes
  std::set<std::string> values;       // options that take a value
  std::set<std::string> switches;     // options that do not
  size_t positional = 0;
};

// Messages may quote what others control (a cgroup's name, a policy's text): printable only.
int fail(const mseg::Error& error) {
  std::fprintf(stderr, "microsegctl: %s\n", ctl::printable(error.message(), true).c_str());
  return kExitFailure;
}

int usageError(const Grammar& grammar, const std::string& problem) {
  std::fprintf(stderr, "microsegctl: %s\nusage: microsegctl %s\n",
               ctl::printable(problem).c_str(), grammar.usage.c_str());
  return kExitUsage;
}

// Parses args[from...] by `grammar`; prints what is wrong and returns nullopt on a mistake.
std::optional<Arguments> parse(const std::vector<std::string>& args, size_t from,
                               const Grammar& grammar) {
  Arguments parsed;
  for (size_t i = from; i < args.size(); i++) {
    std::string name = args[i];
    std::optional<std::string> inline_value;
    if (name.rfind("--", 0) == 0 && name.find('=') != std::string::npos) {
      inline_value = name.substr(name.find('=') + 1);
      name = name.substr(0, name.find('='));
    }
    if (name == "-o") {
      name = "--output";
    }
    if (grammar.switches.count(name) && !inline_value) {
      parsed.switches.insert(name);
    } else if (grammar.values.count(name)) {
      if (!inline_value && i + 1 == args.size()) {
        usageError(grammar, name + " needs a value");
        return std::nullopt;
      }
      std::string value = inline_value ? *inline_value : args[++i];
      if (value.empty()) {
        usageError(grammar, name + " needs a value");
        return std::nullopt;
      }
      parsed.values[name] = value;
    } else if (!name.empty() && name.front() == '-') {
      usageError(grammar, "unknown option `" + args[i] + "`");
      return std::nullopt;
    } else {
      parsed.positional.push_back(args[i]);
    }
  }
  if (parsed.positional.size() != grammar.positional) {
    usageError(grammar, parsed.positional.size() < grammar.positional
                            ? "missing argument"
                            : "unexpected argument `" + parsed.positional.back() + "`");
    return std::nullopt;
  }
  if (auto output = parsed.values.find("--output");
      output != parsed.values.end() && output->second != "json" && output->second != "table") {
    usageError(grammar, "-o " + output->second + ": expected json or table");
    return std::nullopt;
  }
  if (parsed.values.count("--config")) {
    if (parsed.values.count("--socket") || parsed.values.count("--pin-dir")) {
      usageError(grammar, "--config and --socket or --pin-dir name the same thing: give one");
      return std::nullopt;
    }
    auto loaded = mseg::agent::loadConfigFile(parsed.value("--config"), parsed.config);
    if (!loaded) {
      fail(loaded.error());
      return std::nullopt;
    }
  }
  return parsed;
}

// A whole number from 0 to `max`, or nullopt.
std::optional<uint32_t> parseNumber(const std::string& text, uint32_t max) {
  if (text.empty() || text.size() > 10 ||
      text.find_first_not_of("0123456789") != std::string::npos) {
    return std::nullopt;
  }
  uint64_t value = std::stoull(text);
  return value <= max ? std::optional<uint32_t>(static_cast<uint32_t>(value)) : std::nullopt;
}

void printJson(const nlohmann::ordered_json& value) { std::printf("%s\n", value.dump(2).c_str()); }

// Connects to the agent, makes one call and prints its reply as JSON or as a table.
template <typename Call, typename Render>
int askAgent(const Arguments& args, Call call, Render render) {
  auto client = ctl::ControlClient::connect(args.socket());
  if (!client) {
    return fail(client.error());
  }
  auto reply = call(*client);
  if (!reply) {
    return fail(reply.error());
  }
  if (args.json()) {
    printJson(ctl::toJson(*reply));
  } else {
    std::fputs(render(*reply).c_str(), stdout);
  }
  return kExitOk;
}

int validatePolicy(const Arguments& args) {
  const std::string& path = args.positional[0];
  mseg::policy::Diagnostics diagnostics;
  auto compiled = mseg::policy::loadPolicyFile(path, diagnostics);
  if (args.json()) {
    nlohmann::ordered_json report = {{"file", path},
                             {"valid", compiled.ok()},
                             {"errors", diagnostics.errorCount()},
                             {"warnings", diagnostics.warningCount()},
                             {"diagnostics", nlohmann::ordered_json::array()}};
    for (const auto* found : diagnostics.sorted()) {
      const auto& diagnostic = *found;
      report["diagnostics"].push_back(
          {{"severity", diagnostic.severity == mseg::policy::Severity::Error ? "error"
                                                                              : "warning"},
           {"file", diagnostic.source},
           {"line", diagnostic.position.line},
           {"column", diagnostic.position.column},
           {"location", fmt::format("{}:{}:{}", diagnostic.source, diagnostic.position.line,
                                    diagnostic.position.column)},
           {"message", diagnostic.message}});
    }
    if (compiled) {
      report["summary"] = {{"workloads", compiled->workloads.size()},
                           {"inventory_entries", compiled->peers.size()},
                           {"rules", compiled->rules.size()},
                           {"verdict_entries", compiled->entries.size()}};
    } else if (diagnostics.all().empty()) {
      report["error"] = compiled.error().message();  // e.g. the file cannot be read
    }
    printJson(report);
    return compiled ? kExitOk : kExitFailure;
  }

  if (!diagnostics.all().empty()) {
    std::fputs(ctl::printable(diagnostics.format(), true).c_str(), stderr);
  }
  if (!compiled) {
    // The diagnostics above name the file; the summary only says what became of it.
    std::fprintf(stderr, "invalid policy: %s\n",
                 ctl::printable(compiled.error().message(), true).c_str());
    return kExitFailure;
  }
  std::printf("%s: valid: %zu workloads, %zu inventory entries, %zu rules, %zu verdict entries\n",
              ctl::printable(path).c_str(), compiled->workloads.size(), compiled->peers.size(),
              compiled->rules.size(), compiled->entries.size());
  return kExitOk;
}

// Without an agent to ask, the status file of the state directory tells what the last one
// enforced. Its pid is checked: a killed agent could not mark the file stopped.
void describeLastAgent(const std::string& state_dir) {
  auto last = mseg::agent::readStatusFile(state_dir);
  if (!last) {
    return;  // no agent ever ran with this state directory
  }
  const std::string file = mseg::agent::statusFilePath(state_dir);
  if (mseg::agent::agentRunning(last->pid)) {
    std::fprintf(stderr,
                 "microsegctl: %s names microsegd pid %d, which runs: give its control socket "
                 "with --socket or --config\n",
                 ctl::printable(file).c_str(), last->pid);
    return;
  }
  const char* how = last->state == "stopped" ? "it stopped" : "it was killed or crashed";
  std::string enforcing = "nothing is pinned in " + last->pin_dir + ": nothing enforces";
  if (std::filesystem::exists(last->pin_dir)) {
    enforcing = fmt::format("its programs pinned in {} keep enforcing policy version {} "
                            "(sha256 {}) on {}",
                            last->pin_dir, last->policy_version,
                            last->policy_hash.substr(0, 12), last->cgroup);
  }
  std::fprintf(stderr, "microsegctl: microsegd pid %d, which wrote %s, is not running (%s); %s\n",
               last->pid, ctl::printable(file).c_str(), how,
               ctl::printable(enforcing).c_str());
}

int showStatus(const Arguments& args) {
  if (auto usable = ctl::checkControlSocket(args.socket());
      !usable && usable.error().code() == ENOENT) {
    fail(usable.error());
    // With --socket the state directory is not known; it is the configured (or default) one
    // only when the socket is too.
    if (!args.values.count("--socket")) {
      describeLastAgent(args.config.state_dir);
    }
    return kExitFailure;
  }
  bool reload_failed = false;
  int exit_code = askAgent(
      args,
      [&](ctl::ControlClient& client) {
        auto status = client.status();
        reload_failed = status && status->has_last_reload() &&
                        status->last_reload().result() != "applied";
        return status;
      },
      ctl::renderStatus);
  return exit_code == kExitOk && reload_failed ? kExitFailure : exit_code;
}

// The policy at `path` as the agent's diff takes it: a file's text, or a directory's files read
// in the order and with the checks the agent's own loading has.
mseg::Result<cv1::DiffPolicyRequest> policyToDiff(const std::string& path) {
  cv1::DiffPolicyRequest request;
  request.set_source_name(path);
  struct stat info {};
  if (stat(path.c_str(), &info) != 0 || !S_ISDIR(info.st_mode)) {
    auto text = mseg::policy::readPolicyText(path);
    if (!text) {
      return text.error().wrap("read policy");
    }
    request.set_policy_text(std::move(*text));
    return request;
  }
  auto names = mseg::policy::listPolicyDirectory(path);
  if (!names) {
    return names.error().wrap("read policy");
  }
  for (const auto& name : *names) {
    auto text = mseg::policy::readPolicyText(mseg::policy::policyDirectoryPath(path, name));
    if (!text) {
      return text.error().wrap("read policy");
    }
    auto* file = request.add_files();
    file->set_name(name);
    file->set_text(std::move(*text));
  }
  return request;
}

int diffPolicy(const Arguments& args) {
  const std::string& path = args.positional[0];
  auto request = policyToDiff(path);
  if (!request) {
    return fail(request.error());
  }

  auto client = ctl::ControlClient::connect(args.socket());
  if (!client) {
    return fail(client.error());
  }
  auto diff = client->diffPolicy(*request);
  if (!diff) {
    return fail(diff.error());
  }
  const bool changed = diff->rules_size() > 0 || diff->paths_size() > 0;
  if (args.json()) {
    auto report = ctl::toJson(*diff);
    report["file"] = path;
    printJson(report);
    return !diff->valid() || changed ? kExitFailure : kExitOk;
  }
  for (const auto& diagnostic : diff->diagnostics()) {
    std::fprintf(stderr, "%s\n",
                 ctl::printable(fmt::format("{}:{}:{}: {}: {}", diagnostic.file(),
                                            diagnostic.line(), diagnostic.column(),
                                            diagnostic.severity(), diagnostic.message()))
                     .c_str());
  }
  if (!diff->valid()) {
    std::fprintf(stderr, "invalid policy: %s was not compared with the running policy\n",
                 ctl::printable(path).c_str());
    return kExitFailure;
  }
  std::fputs(ctl::renderDiff(*diff, path).c_str(), stdout);
  return changed ? kExitFailure : kExitOk;
}

int tracePolicy(const Arguments& args, const Grammar& grammar) {
  for (const char* required : {"--from", "--to", "--proto"}) {
    if (!args.values.count(required)) {
      return usageError(grammar, std::string(required) + " is required");
    }
  }
  cv1::TraceRequest request;
  request.set_from(args.value("--from"));
  request.set_to(args.value("--to"));
  const std::string protocol = args.value("--proto");
  if (protocol != "tcp" && protocol != "udp" && protocol != "icmp" && protocol != "icmpv6") {
    return usageError(grammar, "--proto " + protocol + ": expected tcp, udp or icmp");
  }
  request.set_protocol(protocol);
  if (args.values.count("--port")) {
    auto port = parseNumber(args.value("--port"), 65535);
    if (!port) {
      return usageError(grammar, "--port " + args.value("--port") + ": expected 0 to 65535");
    }
    request.set_port(*port);
    request.set_port_set(true);
  }

  return askAgent(
      args, [&](ctl::ControlClient& client) { return client.trace(request); }, ctl::renderTrace);
}

int showFlows(const Arguments& args, const Grammar& grammar) {
  cv1::WatchFlowsRequest request;
  request.set_follow(args.switches.count("--follow") > 0);
  if (args.values.count("--verdict")) {
    const std::string verdict = args.value("--verdict");
    if (verdict != "allowed" && verdict != "denied" && verdict != "audit") {
      return usageError(grammar, "--verdict " + verdict + ": expected allowed, denied or audit");
    }
    request.set_verdict(verdict);
  }
  request.set_workload(args.value("--workload"));
  request.set_last(kDefaultLastFlows);
  if (args.values.count("--last")) {
    auto last = parseNumber(args.value("--last"), 1000000);
    if (!last) {
      return usageError(grammar, "--last " + args.value("--last") + ": expected a count");
    }
    request.set_last(*last);
  }

  auto client = ctl::ControlClient::connect(args.socket());
  if (!client) {
    return fail(client.error());
  }
  const bool json = args.json();
  // A follower shows the header at once, so whoever watches sees it is connected.
  bool header = !json;
  if (header && request.follow()) {
    std::fputs(ctl::flowHeader().c_str(), stdout);
    std::fflush(stdout);
    header = false;
  }
  auto shown = client->watchFlows(request, [&](const ctl::FlowRecord& record) {
    if (header) {
      std::fputs(ctl::flowHeader().c_str(), stdout);
      header = false;
    }
    if (json) {
      std::printf("%s\n", ctl::toJson(record).dump().c_str());
    } else {
      std::fputs(ctl::renderFlow(record).c_str(), stdout);
    }
    // Followers are often piped into grep or a test: every line goes out as it comes.
    std::fflush(stdout);
    return !std::ferror(stdout);
  }, [](uint64_t skipped) {
    std::fflush(stdout);
    std::fprintf(stderr,
                 "microsegctl: skipped %llu flow records: they left the agent's ring of the last "
                 "%zu before this reader took them (it reads slower than they come; --verdict or "
                 "--workload send fewer, the flow log has them all)\n",
                 static_cast<unsigned long long>(skipped), mseg::agent::kRecentFlows);
  });
  if (!shown) {
    return fail(shown.error());
  }
  if (header && !request.follow()) {
    std::puts("no flows recorded yet that match");
  }
  return kExitOk;
}

int showWorkloads(const Arguments& args) {
  return askAgent(
      args, [](ctl::ControlClient& client) { return client.workloads(); },
      ctl::renderWorkloads);
}

int showCounters(const Arguments& args) {
  auto counters = mseg::agent::readPinnedCounters(args.pinDir());
  if (!counters) {
    return fail(counters.error());
  }
  // The field names of the control protocol's RuleCounter and ReasonCounter, as in `status`.
  nlohmann::ordered_json json = {{"pin_dir", args.pinDir()},
                                 {"policy_version", counters->policy_version},
                                 {"rules", nlohmann::ordered_json::array()},
                                 {"reasons", nlohmann::ordered_json::array()}};
  ctl::Table rules({"RULE", "VERDICT", "HITS"});
  for (const auto& [id, rule] : counters->rule_names) {
    auto found = counters->rule_hits.find(id);
    const uint64_t hits = found == counters->rule_hits.end() ? 0 : found->second;
    rules.add({rule.name, verdictName(rule.verdict), std::to_string(hits)});
    json["rules"].push_back(
        {{"rule", rule.name}, {"verdict", verdictName(rule.verdict)}, {"hits", hits}});
  }
  ctl::Table reasons({"DATAPATH REASON", "COUNT"});
  for (size_t reason = 0; reason < counters->reasons.size(); reason++) {
    if (const char* name = reasonName(reason)) {
      reasons.add({name, std::to_string(counters->reasons[reason])});
      json["reasons"].push_back({{"reason", name}, {"count", counters->reasons[reason]}});
    }
  }
  if (args.json()) {
    printJson(json);
  } else {
    fmt::print("policy version {}\n\n{}\n{}", counters->policy_version, rules.render(),
               reasons.render());
  }
  return kExitOk;
}

int uninstall(const Arguments& args) {
  const std::string pin_dir = args.pinDir();
  auto removed = mseg::agent::uninstallDatapath(pin_dir);
  if (!removed && removed.error().code() != ENOENT) {
    return fail(removed.error());
  }
  const std::string message =
      removed ? "removed " + pin_dir + ": microseg programs detached, maps unpinned"
              : removed.error().message();
  if (args.json()) {
    printJson({{"pin_dir", pin_dir}, {"removed", removed.ok()}, {"message", message}});
  } else {
    std::printf("%s\n", ctl::printable(message).c_str());
  }
  return kExitOk;
}

// Options may also come before the command (`microsegctl --socket PATH status`), as with other
// tools: they move after the command words, where the command's grammar takes them or says
// it does not. Returns nullopt, having said why, for an option no command takes there.
std::optional<std::vector<std::string>> commandFirst(std::vector<std::string> args) {
  static const std::set<std::string> kLeading = {"--socket", "--config", "--pin-dir", "--output",
                                                 "-o"};
  std::vector<std::string> leading;
  size_t at = 0;
  while (at < args.size() && args[at].size() > 1 && args[at].front() == '-' &&
         args[at] != "--help") {
    const std::string name = args[at].substr(0, args[at].find('='));
    if (!kLeading.count(name)) {
      std::fprintf(stderr, "microsegctl: unknown option `%s` before the command; see "
                           "`microsegctl help`\n",
                   ctl::printable(args[at]).c_str());
      return std::nullopt;
    }
    leading.push_back(args[at++]);
    if (name == leading.back()) {  // its value is the next word
      if (at == args.size()) {
        std::fprintf(stderr, "microsegctl: %s needs a value; see `microsegctl help`\n",
                     name.c_str());
        return std::nullopt;
      }
      leading.push_back(args[at++]);
    }
  }
  args.erase(args.begin(), args.begin() + static_cast<std::ptrdiff_t>(at));
  args.insert(args.end(), leading.begin(), leading.end());
  return args;
}

const std::set<std::string> kAgentOptions = {"--socket", "--config", "--output"};

std::set<std::string> withAgentOptions(std::set<std::string> values) {
  values.insert(kAgentOptions.begin(), kAgentOptions.end());
  return values;
}

int runPolicyCommand(const std::vector<std::string>& args) {
  const std::string sub = args.size() > 1 ? args[1] : "";
  if (sub == "validate") {
    Grammar grammar{"policy validate FILE|DIR [-o json]", {"--output"}, {}, 1};
    auto parsed = parse(args, 2, grammar);
    return parsed ? validatePolicy(*parsed) : kExitUsage;
  }
  if (sub == "diff") {
    Grammar grammar{"policy diff FILE|DIR [-o json] [--socket PATH | --config FILE]", kAgentOptions,
                    {}, 1};
    auto parsed = parse(args, 2, grammar);
    return parsed ? diffPolicy(*parsed) : kExitUsage;
  }
  if (sub == "trace") {
    Grammar grammar{"policy trace --from WORKLOAD|ADDRESS --to WORKLOAD|ADDRESS "
                    "--proto tcp|udp|icmp [--port N] [-o json] [--socket PATH | --config FILE]",
                    withAgentOptions({"--from", "--to", "--proto", "--port"}),
                    {},
                    0};
    auto parsed = parse(args, 2, grammar);
    return parsed ? tracePolicy(*parsed, grammar) : kExitUsage;
  }
  std::fputs("microsegctl: usage: microsegctl policy validate|diff|trace ...; see `microsegctl "
             "help`\n",
             stderr);
  return kExitUsage;
}

}  // namespace

int main(int argc, char** argv) {
  auto reordered = commandFirst({argv + 1, argv + argc});
  if (!reordered) {
    return kExitUsage;
  }
  const std::vector<std::string>& args = *reordered;
  if (args.empty() || args[0] == "help" || args[0] == "--help") {
    std::fputs(kUsage, args.empty() ? stderr : stdout);
    return args.empty() ? kExitUsage : kExitOk;
  }
  const std::string& command = args[0];
  if (command == "policy") {
    return runPolicyCommand(args);
  }
  if (command == "status" || command == "workloads") {
    Grammar grammar{command + " [-o json] [--socket PATH | --config FILE]", kAgentOptions, {},
                    0};
    auto parsed = parse(args, 1, grammar);
    if (!parsed) {
      return kExitUsage;
    }
    return command == "status" ? showStatus(*parsed) : showWorkloads(*parsed);
  }
  if (command == "flows") {
    Grammar grammar{"flows [--follow] [--verdict allowed|denied|audit] [--workload NAME] "
                    "[--last N] [-o json] [--socket PATH | --config FILE]",
                    withAgentOptions({"--verdict", "--workload", "--last"}),
                    {"--follow"},
                    0};
    auto parsed = parse(args, 1, grammar);
    return parsed ? showFlows(*parsed, grammar) : kExitUsage;
  }
  if (command == "counters" || command == "uninstall") {
    Grammar grammar{command + " [-o json] [--pin-dir DIR | --config FILE]",
                    {"--pin-dir", "--config", "--output"}, {}, 0};
    auto parsed = parse(args, 1, grammar);
    if (!parsed) {
      return kExitUsage;
    }
    return command == "counters" ? showCounters(*parsed) : uninstall(*parsed);
  }
  std::fprintf(stderr, "microsegctl: unknown command `%s`; see `microsegctl help`\n",
               ctl::printable(command).c_str());
  return kExitUsage;
}
