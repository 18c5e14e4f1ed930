#include "mseg/format/syslog.hpp"

#include <array>
#include <ctime>
#include <utility>

#include <fmt/format.h>

#include "flow_view.hpp"
#include "mseg/format/cef.hpp"
#include "mseg/format/ocsf.hpp"

namespace mseg::format {
namespace {

// Indexed by facility code.
constexpr std::array<std::string_view, 24> kFacilityNames = {
    "kern",   "user",   "mail",     "daemon", "auth",   "syslog", "lpr",    "news",
    "uucp",   "cron",   "authpriv", "ftp",    "ntp",    "audit",  "alert",  "clock",
    "local0", "local1", "local2",   "local3", "local4", "local5", "local6", "local7",
};

constexpr std::string_view kNilValue = "-";
constexpr std::string_view kAppName = "microseg";
// RFC 5424 caps HOSTNAME at 255 printable US-ASCII characters.
constexpr size_t kMaxHostnameSize = 255;

// RFC 5424 severities: 4 warning, 5 notice, 6 informational.
int rateSyslogSeverity(telemetry::Verdict verdict) {
  switch (verdict) {
    case telemetry::VERDICT_DENY:
      return 4;
    case telemetry::VERDICT_AUDIT:
      return 5;
    default:
      return 6;
  }
}

// RFC 3339 in UTC with microseconds, the precision RFC 5424 allows at most.
std::string formatTimestamp(uint64_t unix_nano) {
  if (unix_nano == 0) {
    return std::string(kNilValue);
  }
  std::time_t seconds = static_cast<std::time_t>(unix_nano / 1'000'000'000);
  uint64_t micros = (unix_nano % 1'000'000'000) / 1'000;
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z", utc.tm_year + 1900,
                     utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, micros);
}

// HOSTNAME admits printable US-ASCII only; anything else would break the header's fields, so
// it becomes `_` rather than dropping the host altogether.
std::string formatHostname(const std::string& host) {
  if (host.empty()) {
    return std::string(kNilValue);
  }
  std::string hostname = host.substr(0, kMaxHostnameSize);
  for (char& c : hostname) {
    if (c < 33 || c > 126) {
      c = '_';
    }
  }
  return hostname;
}

class StructuredData {
public:
  explicit StructuredData(std::string_view sd_id) : text_("[" + std::string(sd_id)) {}

  // Empty values are left out: an absent parameter reads better than `rule=""`.
  void add(std::string_view name, std::string_view value) {
    if (value.empty()) {
      return;
    }
    text_ += fmt::format(" {}=\"{}\"", name, escapeSdParamValue(value));
  }

  void add(std::string_view name, uint64_t value) { add(name, std::to_string(value)); }

  std::string close() && { return std::move(text_) + "]"; }

private:
  std::string text_;
};

}  // namespace

Result<SyslogFacility> parseSyslogFacility(std::string_view name) {
  for (size_t code = 0; code < kFacilityNames.size(); ++code) {
    if (kFacilityNames[code] == name) {
      return static_cast<SyslogFacility>(code);
    }
  }
  return Error::invalid(fmt::format("`{}` is not a syslog facility", name));
}

std::string escapeSdParamValue(std::string_view text) {
  std::string escaped;
  escaped.reserve(text.size());
  for (char c : text) {
    if (c == '"' || c == '\\' || c == ']') {
      escaped += '\\';
    }
    escaped += c;
  }
  return escaped;
}

std::string renderSyslog(const telemetry::FlowRecord& record, Payload payload,
                         const SyslogOptions& options) {
  int priority = static_cast<int>(options.facility) * 8 + rateSyslogSeverity(record.verdict());
  EventNames event = nameEvent(record.event());
  std::string_view msg_id = event.id.empty() ? kNilValue : event.id;
  StructuredData sd(kSyslogSdId);

  sd.add("record_id", record.record_id());
  sd.add("agent_id", record.agent_id());
  sd.add("sequence", record.sequence());
  sd.add("event", event.word);
  sd.add("verdict", formatVerdict(record.verdict()));
  sd.add("direction", formatDirection(record.direction()));
  sd.add("rule", record.rule());
  sd.add("policy_version", record.policy_version());
  sd.add("community_id", recordCommunityId(record));
  sd.add("workload", record.workload().name());
  sd.add("peer", record.peer().name());

  std::string body = payload == Payload::kCef ? renderCef(record) : renderOcsf(record);
  return fmt::format("<{}>1 {} {} {} {} {} {} {}", priority,
                     formatTimestamp(record.time_unix_nano()), formatHostname(record.host()),
                     kAppName, kNilValue, msg_id, std::move(sd).close(), body);
}

std::string frameOctetCounted(std::string_view message) {
  return fmt::format("{} {}", message.size(), message);
}

}  // namespace mseg::format
