// What microsegctl prints: tables for people and JSON for scripts. JSON is the control
// protocol's messages with their field names, 64-bit numbers as numbers, enums as the words
// the tables use and addresses as text, so its keys follow the .proto's compatibility rules.
#pragma once

#include <string>

#include <google/protobuf/message.h>
#include <nlohmann/json.hpp>

#include "ctl_client.hpp"

namespace mseg::ctl {

nlohmann::ordered_json toJson(const google::protobuf::Message& message);

std::string renderStatus(const cv1::AgentStatus& status);
std::string renderDiff(const cv1::PolicyDiff& diff, const std::string& file);
std::string renderTrace(const cv1::Trace& trace);
std::string renderWorkloads(const cv1::WorkloadList& list);

// Flows print as a header once, then one line per record.
std::string flowHeader();
std::string renderFlow(const FlowRecord& record);

// "198.18.0.10" from 4 bytes, "fd00::10" from 16; hex for anything else.
std::string addressText(const std::string& bytes);

}  // namespace mseg::ctl
