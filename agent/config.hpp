// microsegd's settings: built-in defaults, overridden by a YAML configuration file, overridden
// by command-line flags.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mseg/result.hpp"

namespace mseg::agent {

// Where microsegd serves microsegctl unless told otherwise.
inline constexpr const char* kDefaultControlSocket = "/run/microseg/microsegd.sock";

struct AgentConfig {
  std::string policy_path;            // required
  std::string cgroup_path;            // empty: the cgroup v2 root
  std::string pin_dir = "/sys/fs/bpf/microseg";
  std::string state_dir = "/var/lib/microseg";
  std::string log_level = "info";
  unsigned stats_interval_s = 10;     // how often counter changes are summarised in the log
  std::string host;                   // names this host in flow records; empty: gethostname()
  std::string flow_log;               // OCSF JSON lines; empty: <state_dir>/flows.ocsf.jsonl
  uint64_t flow_log_max_bytes = 100ull << 20;
  unsigned flow_log_keep = 5;         // rotated files kept besides the current one
  unsigned udp_idle_timeout_s = 30;   // a datagram flow idle this long ends (and is re-judged)
  // Export to microseg-collector (off when collector is empty).
  std::string collector;              // host:port
  std::string collector_ca;           // CA of the collector's certificate
  std::string collector_server_name;  // name in the collector's certificate; empty: from address
  std::string tls_cert;               // this agent's certificate, naming this host
  std::string tls_key;
  uint64_t spool_max_bytes = 256ull << 20;
  std::string metrics_listen;         // "127.0.0.1:9464" serves Prometheus metrics; empty: off
  bool telemetry = true;              // off: enforce and count per rule, record no flows
  // microsegctl's Unix socket and the group allowed to use it besides root (empty: root only).
  std::string control_socket = kDefaultControlSocket;
  std::string control_group;
};

// What the command line asked for besides settings.
struct CommandLine {
  AgentConfig config;
  bool show_help = false;
  bool show_version = false;
};

// Parses argv. A --config file is read first and flags then override it. Errors name the flag
// or the file:line:column and the cause.
Result<CommandLine> parseCommandLine(int argc, char** argv);

// Reads a configuration file into `config`, keeping fields it does not set.
Status loadConfigFile(const std::string& path, AgentConfig& config);

const char* usageText();

}  // namespace mseg::agent
