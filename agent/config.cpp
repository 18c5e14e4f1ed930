#include "config.hpp"

#include <getopt.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include "mseg/policy/yaml_tree.hpp"

namespace mseg::agent {
namespace {

constexpr const char* kUsage = R"(usage: microsegd --policy FILE|DIR [options]

Enforces a microseg segment policy on this host with eBPF programs attached to a cgroup.

options:
  --policy FILE|DIR      segment policy to enforce (YAML, see docs/policy.md): a file, or a
                         directory whose *.yaml and *.yml files are merged in name order
  --cgroup PATH          cgroup v2 directory to attach to (default: the cgroup v2 root);
                         absolute, or relative to the cgroup v2 mount
  --pin-dir DIR          bpffs directory for pinned maps and links (default /sys/fs/bpf/microseg)
  --state-dir DIR        directory for the agent's state (default /var/lib/microseg)
  --config FILE          YAML configuration file; flags override it
  --log-level LEVEL      trace, debug, info, warn, error (default info)
  --stats-interval SEC   how often counter changes are logged (default 10, 0 turns it off)
  --host NAME            this host's name in flow records (default: the system host name)
  --flow-log FILE        OCSF flow log (default STATE_DIR/flows.ocsf.jsonl when no collector)
  --collector HOST:PORT  stream flow records to microseg-collector (mutual TLS)
  --collector-ca FILE    CA certificate that signed the collector's certificate
  --tls-cert FILE        this agent's certificate (its CN/SAN names this host)
  --tls-key FILE         this agent's private key
  --metrics-listen ADDR  serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464)
  --telemetry on|off     flow records (default on); off still enforces and counts per rule
  --control-socket PATH  Unix socket microsegctl talks to (default /run/microseg/microsegd.sock)
  --control-group NAME   group whose members may use the control socket (default: root only)
  --version              print the version and exit
  --help                 print this help and exit

signals: SIGHUP reloads the policy; SIGTERM and SIGINT stop the agent and leave the
pinned programs enforcing (remove them with `microsegctl uninstall`).
)";

enum Option {
  kPolicy = 1000,
  kCgroup,
  kPinDir,
  kStateDir,
  kConfig,
  kLogLevel,
  kStatsInterval,
  kHost,
  kFlowLog,
  kCollector,
  kCollectorCa,
  kTlsCert,
  kTlsKey,
  kMetricsListen,
  kTelemetry,
  kControlSocket,
  kControlGroup,
  kVersion,
  kHelp,
};

const option kOptions[] = {
    {"policy", required_argument, nullptr, kPolicy},
    {"cgroup", required_argument, nullptr, kCgroup},
    {"pin-dir", required_argument, nullptr, kPinDir},
    {"state-dir", required_argument, nullptr, kStateDir},
    {"config", required_argument, nullptr, kConfig},
    {"log-level", required_argument, nullptr, kLogLevel},
    {"stats-interval", required_argument, nullptr, kStatsInterval},
    {"host", required_argument, nullptr, kHost},
    {"flow-log", required_argument, nullptr, kFlowLog},
    {"collector", required_argument, nullptr, kCollector},
    {"collector-ca", required_argument, nullptr, kCollectorCa},
    {"tls-cert", required_argument, nullptr, kTlsCert},
    {"tls-key", required_argument, nullptr, kTlsKey},
    {"metrics-listen", required_argument, nullptr, kMetricsListen},
    {"telemetry", required_argument, nullptr, kTelemetry},
    {"control-socket", required_argument, nullptr, kControlSocket},
    {"control-group", required_argument, nullptr, kControlGroup},
    {"version", no_argument, nullptr, kVersion},
    {"help", no_argument, nullptr, kHelp},
    {nullptr, 0, nullptr, 0},
};

constexpr std::array<std::string_view, 5> kLogLevels = {"trace", "debug", "info", "warn", "error"};

bool isLogLevel(std::string_view level) {
  for (auto known : kLogLevels) {
    if (known == level) {
      return true;
    }
  }
  return false;
}

std::optional<unsigned> parseSeconds(const std::string& text) {
  auto value = policy::parseDecimal(text);
  if (!value || *value > 86400) {
    return std::nullopt;
  }
  return static_cast<unsigned>(*value);
}

}  // namespace

const char* usageText() { return kUsage; }

Status loadConfigFile(const std::string& path, AgentConfig& config) {
  std::error_code err;
  if (std::filesystem::exists(path, err) && !std::filesystem::is_regular_file(path, err)) {
    return Error(EINVAL, "config file " + path + " is not a regular file; give the path of a "
                         "YAML file such as /etc/microseg/microsegd.yaml");
  }
  std::ifstream file(path);
  if (!file) {
    return Error::fromErrno(errno, "read config file " + path);
  }
  std::stringstream text;
  text << file.rdbuf();

  policy::Diagnostics diagnostics;
  auto document = policy::parseYaml(text.str(), path, diagnostics);
  const policy::YamlNode* tree = document ? &document->root() : nullptr;
  if (tree != nullptr && !tree->isNull()) {
    policy::YamlReader reader(path, diagnostics);
    if (reader.expectMapping(*tree, "configuration")) {
      reader.checkFields(*tree, "configuration",
                         {"policy", "cgroup", "pin_dir", "state_dir", "log_level",
                          "stats_interval", "host", "flow_log", "flow_log_max_bytes",
                          "flow_log_keep", "udp_idle_timeout", "collector", "collector_ca",
                          "collector_server_name", "tls_cert", "tls_key", "spool_max_bytes",
                          "metrics_listen", "telemetry", "control_socket",
                          "control_group"});
      auto readInto = [&](const char* key, std::string& field) {
        if (const auto* node = tree->find(key)) {
          if (auto value = reader.readString(*node, key)) {
            field = *value;
          }
        }
      };
      readInto("policy", config.policy_path);
      readInto("cgroup", config.cgroup_path);
      readInto("pin_dir", config.pin_dir);
      readInto("state_dir", config.state_dir);
      readInto("host", config.host);
      readInto("flow_log", config.flow_log);
      readInto("collector", config.collector);
      readInto("collector_ca", config.collector_ca);
      readInto("collector_server_name", config.collector_server_name);
      readInto("tls_cert", config.tls_cert);
      readInto("tls_key", config.tls_key);
      readInto("metrics_listen", config.metrics_listen);
      readInto("control_socket", config.control_socket);
      readInto("control_group", config.control_group);
      if (const auto* node = tree->find("spool_max_bytes")) {
        if (auto bytes = reader.readUnsigned(*node, "spool_max_bytes", 1 << 20, 1ull << 40)) {
          config.spool_max_bytes = *bytes;
        }
      }
      if (const auto* node = tree->find("flow_log_max_bytes")) {
        if (auto bytes = reader.readUnsigned(*node, "flow_log_max_bytes", 4096, 1ull << 40)) {
          config.flow_log_max_bytes = *bytes;
        }
      }
      if (const auto* node = tree->find("flow_log_keep")) {
        if (auto keep = reader.readUnsigned(*node, "flow_log_keep", 0, 1000)) {
          config.flow_log_keep = static_cast<unsigned>(*keep);
        }
      }
      if (const auto* node = tree->find("udp_idle_timeout")) {
        if (auto seconds = reader.readUnsigned(*node, "udp_idle_timeout", 1, 86400)) {
          config.udp_idle_timeout_s = static_cast<unsigned>(*seconds);
        }
      }
      if (const auto* node = tree->find("log_level")) {
        if (auto level = reader.readChoice(*node, "log_level",
                                           {"trace", "debug", "info", "warn", "error"})) {
          config.log_level = *level;
        }
      }
      if (const auto* node = tree->find("telemetry")) {
        if (auto mode = reader.readChoice(*node, "telemetry", {"on", "off"})) {
          config.telemetry = *mode == "on";
        }
      }
      if (const auto* node = tree->find("stats_interval")) {
        if (auto seconds = reader.readUnsigned(*node, "stats_interval", 0, 86400)) {
          config.stats_interval_s = static_cast<unsigned>(*seconds);
        }
      }
    }
  }
  if (diagnostics.hasErrors()) {
    return Error::invalid(diagnostics.format());
  }
  return {};
}

Result<CommandLine> parseCommandLine(int argc, char** argv) {
  CommandLine command;
  std::map<int, std::string> flags;
  optind = 1;
  opterr = 0;
  for (;;) {
    int index = 0;
    int option = getopt_long(argc, argv, "", kOptions, &index);
    if (option == -1) {
      break;
    }
    if (option == '?') {
      const char* bad = argv[optind - 1];
      return Error::invalid(std::string("unknown option or missing value: ") + bad +
                            " (see --help)");
    }
    flags[option] = optarg != nullptr ? optarg : "";
  }
  if (optind < argc) {
    return Error::invalid(std::string("unexpected argument: ") + argv[optind] + " (see --help)");
  }

  if (flags.count(kConfig)) {
    if (auto loaded = loadConfigFile(flags[kConfig], command.config); !loaded) {
      return loaded.error();
    }
  }
  AgentConfig& config = command.config;
  for (const auto& [option, value] : flags) {
    switch (option) {
      case kPolicy: config.policy_path = value; break;
      case kCgroup: config.cgroup_path = value; break;
      case kPinDir: config.pin_dir = value; break;
      case kStateDir: config.state_dir = value; break;
      case kHost: config.host = value; break;
      case kFlowLog: config.flow_log = value; break;
      case kCollector: config.collector = value; break;
      case kCollectorCa: config.collector_ca = value; break;
      case kTlsCert: config.tls_cert = value; break;
      case kTlsKey: config.tls_key = value; break;
      case kMetricsListen: config.metrics_listen = value; break;
      case kControlSocket: config.control_socket = value; break;
      case kControlGroup: config.control_group = value; break;
      case kLogLevel:
        if (!isLogLevel(value)) {
          return Error::invalid("--log-level " + value +
                                ": expected trace, debug, info, warn or error");
        }
        config.log_level = value;
        break;
      case kStatsInterval:
        if (auto seconds = parseSeconds(value)) {
          config.stats_interval_s = *seconds;
        } else {
          return Error::invalid("--stats-interval " + value +
                                ": expected whole seconds from 0 to 86400");
        }
        break;
      case kTelemetry:
        if (value != "on" && value != "off") {
          return Error::invalid("--telemetry " + value + ": expected on or off");
        }
        config.telemetry = value == "on";
        break;
      case kVersion: command.show_version = true; break;
      case kHelp: command.show_help = true; break;
      default: break;
    }
  }
  if (!config.collector.empty() &&
      (config.collector_ca.empty() || config.tls_cert.empty() || config.tls_key.empty())) {
    return Error::invalid("--collector needs --collector-ca, --tls-cert and --tls-key: the "
                          "collector only accepts agents with a certificate");
  }
  if (!config.telemetry && (!config.collector.empty() || !config.flow_log.empty())) {
    return Error::invalid("telemetry is off, so there are no flow records for --collector or "
                          "--flow-log: turn telemetry on or remove them");
  }
  if (!command.show_help && !command.show_version && config.policy_path.empty()) {
    return Error::invalid("no policy given: pass --policy FILE|DIR or set `policy` in --config");
  }
  return command;
}

}  // namespace mseg::agent
