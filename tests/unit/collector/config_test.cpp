// Reading microseg-collector's configuration: values, defaults, and every problem reported at
// its file:line:column.
#include "mseg/collector/config.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace mseg::collector {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr std::string_view kHeader =
    "listen: 127.0.0.1:7443\n"        // 1
    "tls:\n"                          // 2
    "  cert: /etc/c/collector.crt\n"  // 3
    "  key: /etc/c/collector.key\n"   // 4
    "  client_ca: /etc/c/ca.crt\n"    // 5
    "outputs:\n";                     // 6, outputs from line 7

class CollectorConfigTest : public ::testing::Test {
protected:
  // The errors of `text` parsed as "c.yaml", one line each; empty when it is valid. Warnings,
  // which a failed parse lists too, are left out.
  static std::vector<std::string> problems(std::string_view text) {
    auto config = parseConfig(text, "c.yaml");
    if (config) {
      return {};
    }
    std::vector<std::string> lines;
    std::string message = config.error().message();
    for (size_t start = 0, end; start < message.size(); start = end + 1) {
      end = message.find('\n', start);
      std::string line = message.substr(start, end - start);
      if (line.find(": error: ") != std::string::npos) {
        lines.push_back(std::move(line));
      }
      if (end == std::string::npos) {
        break;
      }
    }
    return lines;
  }

  static std::string withOutputs(std::string_view outputs) {
    return std::string(kHeader) + std::string(outputs);
  }
};

TEST_F(CollectorConfigTest, ReadsEveryKeyOfBothOutputTypes) {
  auto config = parseConfig(R"(listen: "[::1]:7443"
tls: {cert: /c.crt, key: /c.key, client_ca: /ca.crt}
state_dir: /var/lib/mc
log_level: debug
stats_interval: 30
limits: {max_batch_records: 500, max_message_bytes: 1048576, workers: 8}
outputs:
  - type: ocsf_file
    name: archive
    path: /var/log/microseg/flows.jsonl
    max_bytes: 1048576
    keep: 3
    fsync: none
  - type: syslog
    name: siem
    transport: tls
    host: siem.example.net
    port: 6514
    payload: json
    ca: /siem-ca.crt
    server_name: siem.internal
    cert: /client.crt
    key: /client.key
    facility: local3
    queue_messages: 50
    reconnect_initial_ms: 250
    reconnect_max_ms: 5000
)",
                            "c.yaml");

  ASSERT_TRUE(config.ok()) << config.error().message();
  EXPECT_EQ(config->listen, "[::1]:7443");
  EXPECT_EQ(config->tls.client_ca, "/ca.crt");
  EXPECT_EQ(config->state_dir, "/var/lib/mc");
  EXPECT_EQ(config->log_level, "debug");
  EXPECT_EQ(config->stats_interval_s, 30u);
  EXPECT_EQ(config->limits.max_batch_records, 500u);
  EXPECT_EQ(config->limits.max_message_bytes, 1048576u);
  EXPECT_EQ(config->limits.workers, 8u);
  ASSERT_EQ(config->outputs.size(), 2u);
  const auto& file = std::get<OcsfFileOutputConfig>(config->outputs[0]);
  EXPECT_EQ(file.name, "archive");
  EXPECT_EQ(file.path, "/var/log/microseg/flows.jsonl");
  EXPECT_EQ(file.max_bytes, 1048576u);
  EXPECT_EQ(file.keep, 3u);
  EXPECT_EQ(file.fsync, FsyncPolicy::kNone);
  const auto& syslog = std::get<SyslogOutputConfig>(config->outputs[1]);
  EXPECT_EQ(syslog.name, "siem");
  EXPECT_EQ(syslog.transport, SyslogTransport::kTls);
  EXPECT_EQ(syslog.host, "siem.example.net");
  EXPECT_EQ(syslog.port, 6514);
  EXPECT_EQ(syslog.payload, format::Payload::kJson);
  EXPECT_EQ(syslog.ca, "/siem-ca.crt");
  EXPECT_EQ(syslog.server_name, "siem.internal");
  EXPECT_EQ(syslog.cert, "/client.crt");
  EXPECT_EQ(syslog.facility, format::SyslogFacility::kLocal3);
  EXPECT_EQ(syslog.queue_messages, 50u);
  EXPECT_EQ(syslog.reconnect_initial_ms, 250u);
  EXPECT_EQ(syslog.reconnect_max_ms, 5000u);
  EXPECT_THAT(config->warnings, IsEmpty());
}

TEST_F(CollectorConfigTest, FillsDefaultsAndNamesUnnamedOutputsByTypeAndIndex) {
  auto config = parseConfig(withOutputs("  - {type: ocsf_file, path: /f.jsonl}\n"
                                        "  - {type: syslog, host: 127.0.0.1, port: 514}\n"),
                            "c.yaml");

  ASSERT_TRUE(config.ok()) << config.error().message();
  EXPECT_EQ(config->state_dir, "/var/lib/microseg-collector");
  EXPECT_EQ(config->limits.max_batch_records, 1000u);
  const auto& file = std::get<OcsfFileOutputConfig>(config->outputs[0]);
  EXPECT_EQ(file.name, "ocsf_file-0");
  EXPECT_EQ(file.fsync, FsyncPolicy::kBatch);
  EXPECT_EQ(file.keep, 5u);
  const auto& syslog = std::get<SyslogOutputConfig>(config->outputs[1]);
  EXPECT_EQ(syslog.name, "syslog-1");
  EXPECT_EQ(syslog.transport, SyslogTransport::kTcp);
  EXPECT_EQ(syslog.payload, format::Payload::kCef);
  EXPECT_EQ(syslog.facility, format::SyslogFacility::kLocal0);
}

TEST_F(CollectorConfigTest, ReportsMissingRequiredFieldsWhereTheirMappingStarts) {
  EXPECT_THAT(problems("listen: 127.0.0.1:1\n"
                       "tls:\n"
                       "  cert: /c.crt\n"
                       "outputs:\n"
                       "  - type: syslog\n"
                       "    port: 514\n"),
              ElementsAre("c.yaml:3:3: error: tls is missing required field `key`",
                          "c.yaml:3:3: error: tls is missing required field `client_ca`",
                          "c.yaml:5:5: error: syslog output is missing required field `host`"));
}

TEST_F(CollectorConfigTest, ReportsAnUnknownFieldWithTheLikelyIntendedOne) {
  EXPECT_THAT(problems(withOutputs("  - type: ocsf_file\n"
                                   "    path: /f.jsonl\n"
                                   "    max_byte: 100000\n")),
              ElementsAre("c.yaml:9:5: error: unknown field `max_byte` in ocsf_file output; "
                          "allowed fields: type, name, path, max_bytes, keep, fsync (did you "
                          "mean `max_bytes`?)"));
}

TEST_F(CollectorConfigTest, ReportsEveryBadValueInOneRound) {
  EXPECT_THAT(problems("listen: localhost\n"
                       "tls: {cert: /c, key: /k, client_ca: /ca}\n"
                       "limits: {workers: 0}\n"
                       "outputs:\n"
                       "  - type: ocsf_file\n"
                       "    path: /f\n"
                       "    fsync: always\n"
                       "  - type: syslog\n"
                       "    host: h\n"
                       "    port: 70000\n"
                       "    payload: xml\n"),
              ElementsAre("c.yaml:1:9: error: invalid listen address `localhost`; expected "
                          "host:port or [ipv6]:port",
                          "c.yaml:3:19: error: `workers` must be between 1 and 256, found 0",
                          "c.yaml:7:12: error: invalid fsync `always`; expected one of: batch, "
                          "none",
                          "c.yaml:10:11: error: `port` must be between 1 and 65535, found 70000",
                          "c.yaml:11:14: error: invalid payload `xml`; expected one of: cef, "
                          "json"));
}

TEST_F(CollectorConfigTest, RefusesTlsSettingsOnAPlainTcpSyslogOutput) {
  EXPECT_THAT(problems(withOutputs("  - type: syslog\n"
                                   "    host: h\n"
                                   "    port: 514\n"
                                   "    ca: /ca.crt\n")),
              ElementsAre("c.yaml:10:5: error: `ca` applies only to `transport: tls`"));
}

TEST_F(CollectorConfigTest, RequiresACaToVerifyATlsSyslogServer) {
  EXPECT_THAT(problems(withOutputs("  - type: syslog\n"
                                   "    transport: tls\n"
                                   "    host: h\n"
                                   "    port: 6514\n"
                                   "    cert: /client.crt\n")),
              ElementsAre("c.yaml:7:5: error: syslog output with `transport: tls` is missing "
                          "required field `ca`",
                          "c.yaml:7:5: error: `cert` and `key` must be given together"));
}

TEST_F(CollectorConfigTest, ReportsADuplicateOutputNameAtTheSecondUse) {
  EXPECT_THAT(problems(withOutputs("  - {type: ocsf_file, name: a, path: /1}\n"
                                   "  - {type: ocsf_file, name: a, path: /2}\n")),
              ElementsAre("c.yaml:8:29: error: duplicate output name `a`"));
}

TEST_F(CollectorConfigTest, ReportsAnInvalidFacilityAndAnInvertedBackoff) {
  EXPECT_THAT(problems(withOutputs("  - type: syslog\n"
                                   "    host: h\n"
                                   "    port: 514\n"
                                   "    facility: local9\n"
                                   "    reconnect_initial_ms: 500\n"
                                   "    reconnect_max_ms: 100\n")),
              ElementsAre("c.yaml:10:15: error: invalid facility; expected 0 to 23 or a name "
                          "such as daemon or local0",
                          "c.yaml:12:23: error: `reconnect_max_ms` must not be below "
                          "`reconnect_initial_ms`"));
}

TEST_F(CollectorConfigTest, ReadsAFacilityGivenAsItsNumber) {
  auto config =
      parseConfig(withOutputs("  - {type: syslog, host: h, port: 514, facility: 3}\n"), "c.yaml");

  ASSERT_TRUE(config.ok()) << config.error().message();
  EXPECT_EQ(std::get<SyslogOutputConfig>(config->outputs[0]).facility,
            format::SyslogFacility::kDaemon);
}

TEST_F(CollectorConfigTest, ReportsMalformedYamlAtItsPlace) {
  auto lines = problems("listen: [127.0.0.1:1\ntls: {}\n");

  ASSERT_EQ(lines.size(), 1u);
  EXPECT_THAT(lines[0], ::testing::StartsWith("c.yaml:2:"));
  EXPECT_THAT(lines[0], HasSubstr("error:"));
}

TEST_F(CollectorConfigTest, RequiresAtLeastOneOutput) {
  EXPECT_THAT(problems(std::string(kHeader) + "  []\n"),
              ElementsAre("c.yaml:7:3: error: `outputs` must list at least one output"));
}

TEST_F(CollectorConfigTest, WarnsThatSyslogAloneMakesAcknowledgementsVolatile) {
  auto config = parseConfig(withOutputs("  - {type: syslog, host: h, port: 514}\n"), "c.yaml");

  ASSERT_TRUE(config.ok()) << config.error().message();
  EXPECT_THAT(config->warnings,
              ElementsAre("c.yaml:7:3: warning: no ocsf_file output: an acknowledgement only "
                          "means queued for syslog"));
}

TEST_F(CollectorConfigTest, NamesAFileThatCannotBeRead) {
  auto config = loadConfig("/nonexistent/collector.yaml");

  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.error().code(), ENOENT);
  EXPECT_THAT(config.error().message(), HasSubstr("/nonexistent/collector.yaml"));
}

}  // namespace
}  // namespace mseg::collector
