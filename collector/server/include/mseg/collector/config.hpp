// microseg-collector's settings, read from one YAML file (every key is described in
// docs/collector.md).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "mseg/format/syslog.hpp"
#include "mseg/result.hpp"

namespace mseg::collector {

// The collector's own TLS identity and the CA that agents' certificates must chain to.
struct ServerTls {
  std::string cert;       // PEM certificate chain, leaf first
  std::string key;        // PEM private key of the leaf
  std::string client_ca;  // PEM bundle of the CAs that sign agent certificates
};

struct Limits {
  // A batch with more records is refused: a sender that ignores the limit is broken.
  uint32_t max_batch_records = 1000;
  // gRPC refuses larger messages itself (RESOURCE_EXHAUSTED), ending that stream only.
  uint32_t max_message_bytes = 4 * 1024 * 1024;
  // Threads that write batches to the outputs; see docs/collector.md, "Threading".
  uint32_t workers = 4;
};

// When an OCSF file is flushed to disk.
enum class FsyncPolicy : uint8_t {
  kBatch,  // fdatasync before a batch is acknowledged: survives a host crash
  kNone,   // the page cache only: survives a collector crash, not a host crash
};

struct OcsfFileOutputConfig {
  std::string name;
  std::string path;
  uint64_t max_bytes = 100 * 1024 * 1024;  // rotate before a batch would grow the file past it
  uint32_t keep = 5;                       // rotated files kept: path.1 (newest) .. path.<keep>
  FsyncPolicy fsync = FsyncPolicy::kBatch;
};

enum class SyslogTransport : uint8_t { kTcp, kTls };

struct SyslogOutputConfig {
  std::string name;
  SyslogTransport transport = SyslogTransport::kTcp;
  std::string host;
  uint16_t port = 0;
  format::Payload payload = format::Payload::kCef;
  std::string ca;           // TLS: PEM bundle that verifies the syslog server (required)
  std::string server_name;  // TLS: name the server certificate must carry; default `host`
  std::string cert;         // TLS: optional client certificate, for servers that require one
  std::string key;
  format::SyslogFacility facility = format::SyslogFacility::kLocal0;
  uint32_t queue_messages = 10000;
  uint32_t reconnect_initial_ms = 100;
  uint32_t reconnect_max_ms = 30000;
};

using OutputConfig = std::variant<OcsfFileOutputConfig, SyslogOutputConfig>;

struct CollectorConfig {
  std::string listen;  // "host:port" or "[v6]:port"; port 0 picks a free port
  ServerTls tls;
  std::string state_dir = "/var/lib/microseg-collector";
  std::string log_level = "info";
  uint32_t stats_interval_s = 60;  // how often counter changes are logged; 0 turns it off
  Limits limits;
  std::vector<OutputConfig> outputs;
  // Problems that leave the file usable, as "source:line:column: warning: ..." lines to log.
  std::vector<std::string> warnings;
};

// Parses and validates a configuration text. `source` names it in messages. On failure the
// error's message lists every problem, one "source:line:column: error: ..." line each.
Result<CollectorConfig> parseConfig(std::string_view text, std::string_view source);

// Reads and parses the file at `path`; a read failure names the file and errno.
Result<CollectorConfig> loadConfig(const std::string& path);

// The name an output has in logs and counters: its `name`, else "<type>-<index>".
const std::string& outputName(const OutputConfig& output);

}  // namespace mseg::collector
