#include "mseg/format/syslog.hpp"

#include <array>
#include <ctime>
#include <iterator>

#include <fmt/compile.h>
#include <fmt/format.h>

#include "append.hpp"
#include "flow_view.hpp"

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
void appendTimestamp(uint64_t unix_nano, std::string& out) {
  if (unix_nano == 0) {
    out += kNilValue;
    return;
  }
  std::time_t seconds = static_cast<std::time_t>(unix_nano / 1'000'000'000);
  uint64_t micros = (unix_nano % 1'000'000'000) / 1'000;
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  fmt::format_to(std::back_inserter(out), FMT_COMPILE("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z"),
                 utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min,
                 utc.tm_sec, micros);
}

// HOSTNAME admits printable US-ASCII only; anything else would break the header's fields, so
// it becomes `_` rather than dropping the host altogether.
void appendHostname(const std::string& host, std::string& out) {
  if (host.empty()) {
    out += kNilValue;
    return;
  }
  for (char c : std::string_view(host).substr(0, kMaxHostnameSize)) {
    out += c < 33 || c > 126 ? '_' : c;
  }
}

void appendSdParamValue(std::string_view text, std::string& out) {
  size_t copied = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c != '"' && c != '\\' && c != ']') {
      continue;
    }
    out.append(text, copied, i - copied);
    out += '\\';
    out += c;
    copied = i + 1;
  }
  out.append(text, copied);
}

// One SD-ELEMENT written straight into the message.
class StructuredData {
public:
  StructuredData(std::string_view sd_id, std::string& message) : message_(message) {
    message_ += '[';
    message_ += sd_id;
  }

  // Empty values are left out: an absent parameter reads better than `rule=""`.
  void add(std::string_view name, std::string_view value) {
    if (value.empty()) {
      return;
    }
    message_ += ' ';
    message_ += name;
    message_ += "=\"";
    appendSdParamValue(value, message_);
    message_ += '"';
  }

  void add(std::string_view name, uint64_t value) {
    fmt::format_int digits(value);
    add(name, std::string_view(digits.data(), digits.size()));
  }

  void close() { message_ += ']'; }

private:
  std::string& message_;
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
  appendSdParamValue(text, escaped);
  return escaped;
}

std::string renderSyslog(const telemetry::FlowRecord& record, Payload payload,
                         const SyslogOptions& options) {
  int priority = static_cast<int>(options.facility) * 8 + rateSyslogSeverity(record.verdict());
  EventNames event = nameEvent(record.event());
  std::string_view msg_id = event.id.empty() ? kNilValue : event.id;
  std::string message;
  // Typical messages are 1 KB with a CEF body and 2 KB with an OCSF one.
  message.reserve(payload == Payload::kCef ? 1536 : 3072);

  fmt::format_to(std::back_inserter(message), FMT_COMPILE("<{}>1 "), priority);
  appendTimestamp(record.time_unix_nano(), message);
  message += ' ';
  appendHostname(record.host(), message);
  fmt::format_to(std::back_inserter(message), FMT_COMPILE(" {} {} {} "), kAppName, kNilValue,
                 msg_id);

  StructuredData sd(kSyslogSdId, message);
  std::string community_id_scratch;
  sd.add("record_id", record.record_id());
  sd.add("agent_id", record.agent_id());
  sd.add("sequence", record.sequence());
  sd.add("event", event.word);
  sd.add("verdict", formatVerdict(record.verdict()));
  sd.add("direction", formatDirection(record.direction()));
  sd.add("rule", record.rule());
  sd.add("policy_version", record.policy_version());
  sd.add("community_id", recordCommunityId(record, community_id_scratch));
  sd.add("workload", record.workload().name());
  sd.add("peer", record.peer().name());
  sd.close();
  message += ' ';

  if (payload == Payload::kCef) {
    appendCef(record, message);
  } else {
    appendOcsf(record, message);
  }
  return message;
}

std::string frameOctetCounted(std::string_view message) {
  return fmt::format("{} {}", message.size(), message);
}

}  // namespace mseg::format
