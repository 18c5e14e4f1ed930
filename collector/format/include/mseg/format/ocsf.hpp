// Flow records as OCSF 1.1.0 Network Activity events (class_uid 4001), the JSON that AWS
// Security Lake and most SIEM integrations ingest. docs/siem.md lists every field.
#pragma once

#include <string>

#include "microseg/telemetry/v1/telemetry.pb.h"

namespace mseg::format {

inline constexpr std::string_view kOcsfVersion = "1.1.0";

// The event as one line of JSON without a trailing newline, claiming the `host` and
// `security_control` profiles. Never fails: fields the record lacks or carries malformed (an
// address of the wrong length, invalid UTF-8) are left out or replaced with U+FFFD, so one bad
// record cannot stop an export. Thread-safe.
std::string renderOcsf(const microseg::telemetry::v1::FlowRecord& record);

}  // namespace mseg::format
