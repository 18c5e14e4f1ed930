// Renderers that append to a caller's string, so that syslog can put a body after its header
// without rendering it into a string of its own first. Internal to mseg_format.
#pragma once

#include <string>

#include "microseg/telemetry/v1/telemetry.pb.h"

namespace mseg::format {

// renderOcsf's text, appended to `out`.
void appendOcsf(const microseg::telemetry::v1::FlowRecord& record, std::string& out);

// renderCef's line, appended to `out`.
void appendCef(const microseg::telemetry::v1::FlowRecord& record, std::string& out);

}  // namespace mseg::format
