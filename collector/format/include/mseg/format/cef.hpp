// Flow records as ArcSight Common Event Format (CEF:0) lines, for SIEMs that parse CEF rather
// than JSON (ArcSight, QRadar, Microsoft Sentinel's CommonSecurityLog). docs/siem.md lists the
// keys.
#pragma once

#include <string>
#include <string_view>

#include "microseg/telemetry/v1/telemetry.pb.h"

namespace mseg::format {

// `CEF:0|microseg|microseg|<version>|<signature id>|<name>|<severity>|<extension>` on one line,
// without a trailing newline. IPv4 addresses go in src/dst, IPv6 ones in c6a2/c6a3 (the CEF
// standard types src and dst as IPv4). Never fails: missing or malformed fields are left out.
// Thread-safe.
std::string renderCef(const microseg::telemetry::v1::FlowRecord& record);

// A header field with `\` and `|` escaped; line breaks, which a header cannot carry, become
// spaces.
std::string escapeCefHeader(std::string_view text);

// An extension value with `\` and `=` escaped and line breaks written as `\n` and `\r`.
std::string escapeCefValue(std::string_view text);

}  // namespace mseg::format
