#include "mseg/collector/config.hpp"

#include <fmt/format.h>

#include <fstream>
#include <optional>
#include <set>
#include <sstream>

#include "mseg/policy/yaml_tree.hpp"

namespace mseg::collector {
namespace {

using policy::Diagnostics;
using policy::Position;
using policy::YamlNode;
using policy::YamlReader;

constexpr uint32_t kMaxPort = 65535;

// Splits "host:port" or "[v6]:port"; nullopt when the text has neither form.
std::optional<std::pair<std::string, uint64_t>> splitHostPort(std::string_view text) {
  std::string_view host;
  std::string_view port;
  if (text.starts_with('[')) {
    auto close = text.find("]:");
    if (close == std::string_view::npos) {
      return std::nullopt;
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos || text.find(':') != colon) {
      return std::nullopt;
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  auto number = policy::parseDecimal(port);
  if (host.empty() || !number || *number > kMaxPort) {
    return std::nullopt;
  }
  return std::make_pair(std::string(host), *number);
}

// Reads one configuration tree, reporting every problem into the diagnostics it was made with.
class ConfigReader {
public:
  ConfigReader(std::string_view source, Diagnostics& out) : reader_(source, out) {}

  void readTop(const YamlNode& root, CollectorConfig& config) {
    if (!reader_.expectMapping(root, "configuration")) {
      return;
    }
    reader_.checkFields(
        root, "configuration",
        {"listen", "tls", "state_dir", "log_level", "stats_interval", "limits", "outputs"});

    if (const auto* node = reader_.require(root, "listen", "configuration")) {
      readListen(*node, config.listen);
    }
    if (const auto* node = reader_.require(root, "tls", "configuration")) {
      readServerTls(*node, config.tls);
    }
    readOptionalString(root, "state_dir", config.state_dir);
    if (const auto* node = root.find("log_level")) {
      if (auto level =
              reader_.readChoice(*node, "log_level", {"trace", "debug", "info", "warn", "error"})) {
        config.log_level = *level;
      }
    }
    readOptionalNumber(root, "stats_interval", 0, 86400, config.stats_interval_s);
    if (const auto* node = root.find("limits")) {
      readLimits(*node, config.limits);
    }
    if (const auto* node = reader_.require(root, "outputs", "configuration")) {
      readOutputs(*node, config.outputs);
    }
  }

private:
  void readListen(const YamlNode& node, std::string& listen) {
    auto text = reader_.readString(node, "listen");
    if (!text) {
      return;
    }
    if (!splitHostPort(*text)) {
      reader_.error(
          node.position,
          fmt::format("invalid listen address `{}`; expected host:port or [ipv6]:port", *text));
      return;
    }
    listen = *text;
  }

  void readServerTls(const YamlNode& node, ServerTls& tls) {
    if (!reader_.expectMapping(node, "tls")) {
      return;
    }
    reader_.checkFields(node, "tls", {"cert", "key", "client_ca"});
    readRequiredString(node, "cert", "tls", tls.cert);
    readRequiredString(node, "key", "tls", tls.key);
    readRequiredString(node, "client_ca", "tls", tls.client_ca);
  }

  void readLimits(const YamlNode& node, Limits& limits) {
    if (!reader_.expectMapping(node, "limits")) {
      return;
    }
    reader_.checkFields(node, "limits", {"max_batch_records", "max_message_bytes", "workers"});
    readOptionalNumber(node, "max_batch_records", 1, 100000, limits.max_batch_records);
    readOptionalNumber(node, "max_message_bytes", 1024, 64 * 1024 * 1024, limits.max_message_bytes);
    readOptionalNumber(node, "workers", 1, 256, limits.workers);
  }

  void readOutputs(const YamlNode& node, std::vector<OutputConfig>& outputs) {
    if (!reader_.expectSequence(node, "outputs")) {
      return;
    }
    if (node.children.empty()) {
      reader_.error(node.position, "`outputs` must list at least one output");
      return;
    }

    std::set<std::string> names;
    bool any_file = false;
    for (size_t index = 0; index < node.children.size(); ++index) {
      const YamlNode& item = node.children[index];
      auto output = readOutput(item, index);
      if (!output) {
        continue;
      }
      const std::string& name = outputName(*output);
      if (!names.insert(name).second) {
        const YamlNode* name_node = item.find("name");
        reader_.error(name_node != nullptr ? name_node->position : item.position,
                      fmt::format("duplicate output name `{}`", name));
      }
      any_file = any_file || std::holds_alternative<OcsfFileOutputConfig>(*output);
      outputs.push_back(std::move(*output));
    }

    if (!any_file && !outputs.empty()) {
      reader_.warning(node.position,
                      "no ocsf_file output: an acknowledgement only means queued for syslog");
    }
  }

  std::optional<OutputConfig> readOutput(const YamlNode& item, size_t index) {
    if (!reader_.expectMapping(item, "outputs item")) {
      return std::nullopt;
    }
    const YamlNode* type_node = reader_.require(item, "type", "output");
    if (type_node == nullptr) {
      return std::nullopt;
    }
    auto type = reader_.readChoice(*type_node, "output type", {"ocsf_file", "syslog"});
    if (!type) {
      return std::nullopt;
    }

    std::string name = fmt::format("{}-{}", *type, index);
    if (const auto* name_node = item.find("name")) {
      if (auto value = reader_.readString(*name_node, "name")) {
        name = *value;
      }
    }
    if (*type == "ocsf_file") {
      return readOcsfFile(item, std::move(name));
    }
    return readSyslog(item, std::move(name));
  }

  OutputConfig readOcsfFile(const YamlNode& item, std::string name) {
    reader_.checkFields(item, "ocsf_file output",
                        {"type", "name", "path", "max_bytes", "keep", "fsync"});
    OcsfFileOutputConfig file;
    file.name = std::move(name);
    readRequiredString(item, "path", "ocsf_file output", file.path);
    // A floor keeps rotation from running on every batch; the ceiling is 1 TiB.
    readOptionalNumber(item, "max_bytes", 4096, uint64_t{1} << 40, file.max_bytes);
    readOptionalNumber(item, "keep", 1, 1000, file.keep);
    if (const auto* node = item.find("fsync")) {
      if (auto policy = reader_.readChoice(*node, "fsync", {"batch", "none"})) {
        file.fsync = *policy == "batch" ? FsyncPolicy::kBatch : FsyncPolicy::kNone;
      }
    }
    return file;
  }

  OutputConfig readSyslog(const YamlNode& item, std::string name) {
    constexpr std::string_view kWhat = "syslog output";
    reader_.checkFields(
        item, kWhat,
        {"type", "name", "transport", "host", "port", "payload", "ca", "server_name", "cert", "key",
         "facility", "queue_messages", "reconnect_initial_ms", "reconnect_max_ms"});
    SyslogOutputConfig syslog;
    syslog.name = std::move(name);

    if (const auto* node = item.find("transport")) {
      if (auto transport = reader_.readChoice(*node, "transport", {"tcp", "tls"})) {
        syslog.transport = *transport == "tls" ? SyslogTransport::kTls : SyslogTransport::kTcp;
      }
    }
    readRequiredString(item, "host", kWhat, syslog.host);
    if (const auto* node = reader_.require(item, "port", kWhat)) {
      if (auto port = reader_.readUnsigned(*node, "port", 1, kMaxPort)) {
        syslog.port = static_cast<uint16_t>(*port);
      }
    }
    if (const auto* node = item.find("payload")) {
      if (auto payload = reader_.readChoice(*node, "payload", {"cef", "json"})) {
        syslog.payload = *payload == "json" ? format::Payload::kJson : format::Payload::kCef;
      }
    }

    readSyslogTls(item, syslog);
    if (const auto* node = item.find("facility")) {
      readFacility(*node, syslog.facility);
    }
    readOptionalNumber(item, "queue_messages", 1, 10'000'000, syslog.queue_messages);
    readOptionalNumber(item, "reconnect_initial_ms", 1, 60'000, syslog.reconnect_initial_ms);
    readOptionalNumber(item, "reconnect_max_ms", 1, 3'600'000, syslog.reconnect_max_ms);
    if (syslog.reconnect_max_ms < syslog.reconnect_initial_ms) {
      const YamlNode* node = item.find("reconnect_max_ms");
      reader_.error(node != nullptr ? node->position : item.position,
                    "`reconnect_max_ms` must not be below `reconnect_initial_ms`");
    }
    return syslog;
  }

  void readSyslogTls(const YamlNode& item, SyslogOutputConfig& syslog) {
    readOptionalString(item, "ca", syslog.ca);
    readOptionalString(item, "server_name", syslog.server_name);
    readOptionalString(item, "cert", syslog.cert);
    readOptionalString(item, "key", syslog.key);

    if (syslog.transport == SyslogTransport::kTcp) {
      for (const char* key : {"ca", "server_name", "cert", "key"}) {
        if (const auto* node = item.find(key)) {
          reader_.error(node->key_position,
                        fmt::format("`{}` applies only to `transport: tls`", key));
        }
      }
      return;
    }
    if (syslog.ca.empty() && item.find("ca") == nullptr) {
      reader_.error(item.position,
                    "syslog output with `transport: tls` is missing required field `ca`");
    }
    if (syslog.cert.empty() != syslog.key.empty()) {
      reader_.error(item.position, "`cert` and `key` must be given together");
    }
  }

  void readFacility(const YamlNode& node, format::SyslogFacility& facility) {
    if (node.isScalar() && node.plain) {
      if (auto number = policy::parseDecimal(node.text); number && *number <= 23) {
        facility = static_cast<format::SyslogFacility>(*number);
        return;
      }
    }
    auto named = node.isScalar() ? format::parseSyslogFacility(node.text)
                                 : Result<format::SyslogFacility>(Error::invalid(""));
    if (!named) {
      reader_.error(node.position,
                    "invalid facility; expected 0 to 23 or a name such as daemon or local0");
      return;
    }
    facility = *named;
  }

  void readRequiredString(const YamlNode& mapping, std::string_view key, std::string_view what,
                          std::string& field) {
    if (const auto* node = reader_.require(mapping, key, what)) {
      if (auto value = reader_.readString(*node, key)) {
        field = *value;
      }
    }
  }

  void readOptionalString(const YamlNode& mapping, std::string_view key, std::string& field) {
    if (const auto* node = mapping.find(key)) {
      if (auto value = reader_.readString(*node, key)) {
        field = *value;
      }
    }
  }

  template <typename Number>
  void readOptionalNumber(const YamlNode& mapping, std::string_view key, uint64_t min, uint64_t max,
                          Number& field) {
    if (const auto* node = mapping.find(key)) {
      if (auto value = reader_.readUnsigned(*node, key, min, max)) {
        field = static_cast<Number>(*value);
      }
    }
  }

  YamlReader reader_;
};

}  // namespace

const std::string& outputName(const OutputConfig& output) {
  return std::visit([](const auto& config) -> const std::string& { return config.name; }, output);
}

Result<CollectorConfig> parseConfig(std::string_view text, std::string_view source) {
  Diagnostics diagnostics;
  CollectorConfig config;

  auto document = policy::parseYaml(text, source, diagnostics);
  if (document) {
    ConfigReader(source, diagnostics).readTop(document->root(), config);
  }

  if (diagnostics.hasErrors()) {
    return Error::invalid(diagnostics.format());
  }
  for (const auto& diagnostic : diagnostics.all()) {
    config.warnings.push_back(diagnostic.toString());
  }
  return config;
}

Result<CollectorConfig> loadConfig(const std::string& path) {
  std::ifstream file(path);
  if (!file) {
    return Error::fromErrno(errno, "read config file " + path);
  }
  std::stringstream text;
  text << file.rdbuf();
  return parseConfig(text.str(), path);
}

}  // namespace mseg::collector
