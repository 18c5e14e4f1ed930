// Flow records as RFC 5424 syslog messages, and RFC 6587 octet-counting framing for sending
// them over TCP or TLS.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "microseg/telemetry/v1/telemetry.pb.h"
#include "mseg/result.hpp"

namespace mseg::format {

// What the syslog MSG part carries.
enum class Payload {
  kCef,   // renderCef
  kJson,  // renderOcsf
};

// RFC 5424 facility codes.
enum class SyslogFacility : uint8_t {
  kKern = 0,
  kUser = 1,
  kMail = 2,
  kDaemon = 3,
  kAuth = 4,
  kSyslog = 5,
  kLpr = 6,
  kNews = 7,
  kUucp = 8,
  kCron = 9,
  kAuthpriv = 10,
  kFtp = 11,
  kNtp = 12,
  kAudit = 13,  // "log audit"
  kAlert = 14,  // "log alert"
  kClock = 15,  // "clock daemon"
  kLocal0 = 16,
  kLocal1 = 17,
  kLocal2 = 18,
  kLocal3 = 19,
  kLocal4 = 20,
  kLocal5 = 21,
  kLocal6 = 22,
  kLocal7 = 23,
};

// The facility named in a configuration, lower case: "kern", "user", "mail", "daemon", "auth",
// "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp", "ntp", "audit", "alert", "clock",
// "local0".."local7". Fails with EINVAL naming the text.
Result<SyslogFacility> parseSyslogFacility(std::string_view name);

struct SyslogOptions {
  SyslogFacility facility = SyslogFacility::kLocal0;
};

// SD-ID of our structured data element.
// TODO: 32473 is the enterprise number RFC 5612 reserves for documentation, not ours; register an
// IANA private enterprise number for microseg and move the SD-ID to it.
inline constexpr std::string_view kSyslogSdId = "microseg@32473";

// `<PRI>1 TIMESTAMP HOSTNAME microseg - MSGID [microseg@32473 ...] MSG` without a trailing
// newline or framing. The severity in PRI follows the verdict (allow: informational, audit:
// notice, deny: warning); MSGID is flow-start, flow-end or flow-denied; MSG is the CEF or OCSF
// JSON rendering, without a BOM. Never fails: fields the record lacks are NILVALUE or left out.
// Thread-safe.
std::string renderSyslog(const microseg::telemetry::v1::FlowRecord& record, Payload payload,
                         const SyslogOptions& options = {});

// An SD-PARAM value with `"`, `\` and `]` escaped (RFC 5424 section 6.3.3).
std::string escapeSdParamValue(std::string_view text);

// `<octet count> <message>` (RFC 6587 section 3.4.1): the count is of bytes, so the frame is
// exact whatever the message contains, newlines included.
std::string frameOctetCounted(std::string_view message);

}  // namespace mseg::format
