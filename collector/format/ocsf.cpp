#include "mseg/format/ocsf.hpp"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string_view>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "flow_view.hpp"
#include "mseg/format/product.hpp"

namespace mseg::format {
namespace {

// Insertion order is kept, so every record renders its attributes in one fixed order.
using Json = nlohmann::ordered_json;

constexpr int kNetworkCategoryUid = 4;
constexpr int kNetworkActivityClassUid = 4001;
constexpr std::string_view kNetworkActivityCaption = "Network Activity";

// An OCSF enum value and its caption, which goes into the `_id` attribute's sibling.
struct Enumerated {
  int id;
  std::string_view caption;
};

Enumerated classifyActivity(telemetry::FlowEvent event) {
  switch (event) {
    case telemetry::FLOW_EVENT_START:
      return {1, "Open"};
    case telemetry::FLOW_EVENT_END:
      return {2, "Close"};
    case telemetry::FLOW_EVENT_DENIED:
      return {5, "Refuse"};
    default:
      return {0, "Unknown"};
  }
}

// A refused connection is an attempt that failed; an opened or closed one succeeded.
Enumerated classifyStatus(telemetry::FlowEvent event) {
  switch (event) {
    case telemetry::FLOW_EVENT_START:
    case telemetry::FLOW_EVENT_END:
      return {1, "Success"};
    case telemetry::FLOW_EVENT_DENIED:
      return {2, "Failure"};
    default:
      return {0, "Unknown"};
  }
}

struct Outcome {
  Enumerated action;
  Enumerated disposition;
  Enumerated severity;
};

// Audit lets the traffic pass (action Allowed) while the policy would deny it: OCSF's
// disposition "Detected" is exactly "a policy violation was detected without further action".
Outcome judgeVerdict(telemetry::Verdict verdict) {
  switch (verdict) {
    case telemetry::VERDICT_ALLOW:
      return {{1, "Allowed"}, {1, "Allowed"}, {1, "Informational"}};
    case telemetry::VERDICT_AUDIT:
      return {{1, "Allowed"}, {15, "Detected"}, {2, "Low"}};
    case telemetry::VERDICT_DENY:
      return {{2, "Denied"}, {2, "Blocked"}, {3, "Medium"}};
    default:
      return {{0, "Unknown"}, {0, "Unknown"}, {0, "Unknown"}};
  }
}

Enumerated classifyDirection(telemetry::Direction direction) {
  switch (direction) {
    case telemetry::DIRECTION_EGRESS:
      return {2, "Outbound"};
    case telemetry::DIRECTION_INGRESS:
      return {1, "Inbound"};
    default:
      return {0, "Unknown"};
  }
}

// OCSF 1.1.0 types `duration` and `count` as integer_t, a signed 32-bit value: about 24.8 days
// of milliseconds. Larger values are clamped there and given exactly in `unmapped`.
constexpr uint64_t kIntegerMax = std::numeric_limits<int32_t>::max();

// hostname_t: dot-separated labels of ASCII letters, digits and inner hyphens.
bool isHostname(std::string_view name) {
  if (name.empty() || name.size() > 253) {
    return false;
  }
  size_t start = 0;
  while (true) {
    size_t dot = name.find('.', start);
    std::string_view label = name.substr(start, dot == std::string_view::npos ? dot : dot - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    for (char c : label) {
      bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
      if (!alnum && c != '-') {
        return false;
      }
    }
    if (dot == std::string_view::npos) {
      return true;
    }
    start = dot + 1;
  }
}

bool isLoopback(const std::string& address) {
  if (address.size() == 4) {
    return static_cast<uint8_t>(address[0]) == 127;
  }
  static const std::string kIpv6Loopback("\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\1", 16);
  return address == kIpv6Loopback;
}

Json renderEndpoint(const std::string& ip, std::optional<uint16_t> port, const std::string& name,
                    const std::string& hostname) {
  Json endpoint = Json::object();
  if (!ip.empty()) {
    endpoint["ip"] = ip;
  }
  if (port) {
    endpoint["port"] = *port;
  }
  if (!name.empty()) {
    endpoint["name"] = name;
  }
  if (!hostname.empty()) {
    endpoint["hostname"] = hostname;
  }
  return endpoint;
}

Json renderLabels(const google::protobuf::Map<std::string, std::string>& labels) {
  Json object = Json::object();
  for (const auto& [key, value] : sortLabels(labels)) {
    object[key] = value;
  }
  return object;
}

std::string formatEndpoint(const std::string& ip, std::optional<uint16_t> port) {
  std::string text = ip.empty() ? "?" : ip;
  if (!port) {
    return text;
  }
  bool ipv6 = text.find(':') != std::string::npos;
  return ipv6 ? fmt::format("[{}]:{}", text, *port) : fmt::format("{}:{}", text, *port);
}

// One readable sentence for `message`, e.g. "flow started: egress tcp 198.18.0.10:43512 ->
// 198.18.0.20:5432, allowed by shop/web-to-db".
std::string describeFlow(const telemetry::FlowRecord& record, const FlowView& view) {
  std::string protocol(formatProtocol(record.protocol()));
  if (protocol.empty()) {
    protocol = fmt::format("protocol {}", record.protocol());
  }
  std::string text = fmt::format("{}: {} {} {} -> {}", nameEvent(record.event()).phrase,
                                 formatDirection(record.direction()), protocol,
                                 formatEndpoint(view.src_ip, view.src_port),
                                 formatEndpoint(view.dst_ip, view.dst_port));
  if (view.icmp) {
    text += fmt::format(" type {} code {}", record.local_port(), record.peer_port());
  }

  std::string by = record.rule().empty() ? "" : " by " + record.rule();
  switch (record.verdict()) {
    case telemetry::VERDICT_ALLOW:
      text += ", allowed" + by;
      break;
    case telemetry::VERDICT_DENY:
      text += ", denied" + by;
      break;
    case telemetry::VERDICT_AUDIT:
      text += ", allowed in audit mode, would be denied" + by;
      break;
    default:
      break;
  }
  if (record.event() == telemetry::FLOW_EVENT_DENIED && record.attempts() > 0) {
    text += fmt::format(", {} attempt{}", record.attempts(), record.attempts() == 1 ? "" : "s");
  }
  return text;
}

void addClassification(Json& event, const telemetry::FlowRecord& record) {
  Enumerated activity = classifyActivity(record.event());
  Outcome outcome = judgeVerdict(record.verdict());
  Enumerated status = classifyStatus(record.event());

  event["activity_id"] = activity.id;
  event["activity_name"] = activity.caption;
  event["category_uid"] = kNetworkCategoryUid;
  event["category_name"] = kNetworkActivityCaption;
  event["class_uid"] = kNetworkActivityClassUid;
  event["class_name"] = kNetworkActivityCaption;
  event["type_uid"] = int64_t{kNetworkActivityClassUid} * 100 + activity.id;
  event["type_name"] = fmt::format("{}: {}", kNetworkActivityCaption, activity.caption);
  event["severity_id"] = outcome.severity.id;
  event["severity"] = outcome.severity.caption;
  event["status_id"] = status.id;
  event["status"] = status.caption;
  event["action_id"] = outcome.action.id;
  event["action"] = outcome.action.caption;
  event["disposition_id"] = outcome.disposition.id;
  event["disposition"] = outcome.disposition.caption;
}

// time is when the event happened: the end for END, the last attempt for DENIED.
void addOccurrence(Json& event, Json& unmapped, const telemetry::FlowRecord& record) {
  event["time"] = toMillis(record.time_unix_nano());
  event["timezone_offset"] = 0;
  if (record.start_unix_nano() != 0) {
    event["start_time"] = toMillis(record.start_unix_nano());
  }
  bool ended =
      record.event() == telemetry::FLOW_EVENT_END || record.event() == telemetry::FLOW_EVENT_DENIED;
  if (ended) {
    event["end_time"] = toMillis(record.time_unix_nano());
  }

  if (record.event() == telemetry::FLOW_EVENT_END) {
    uint64_t duration_ms = toMillis(record.duration_nano());
    event["duration"] = std::min(duration_ms, kIntegerMax);
    if (duration_ms > kIntegerMax) {
      unmapped["duration_ms"] = duration_ms;
    }
  }
  if (record.event() == telemetry::FLOW_EVENT_DENIED && record.attempts() > 0) {
    event["count"] = std::min(record.attempts(), kIntegerMax);
    if (record.attempts() > kIntegerMax) {
      unmapped["attempts"] = record.attempts();
    }
  }
}

Json renderMetadata(const telemetry::FlowRecord& record, const std::string& community_id) {
  Json metadata = Json::object();
  metadata["version"] = kOcsfVersion;
  metadata["product"] = {
      {"name", kProductName}, {"vendor_name", kVendorName}, {"version", productVersion()}};
  metadata["profiles"] = Json::array({"host", "security_control"});
  if (!record.record_id().empty()) {
    metadata["uid"] = record.record_id();
  }
  // OCSF 1.1.0 has no community_uid (1.3.0 adds it to connection_info); correlating events of
  // one flow across tools is what correlation_uid is for.
  if (!community_id.empty()) {
    metadata["correlation_uid"] = community_id;
  }
  return metadata;
}

Json renderConnectionInfo(const telemetry::FlowRecord& record, const FlowView& view) {
  Json info = Json::object();
  info["protocol_num"] = record.protocol();
  std::string_view protocol = formatProtocol(record.protocol());
  if (!protocol.empty()) {
    info["protocol_name"] = protocol;
  }

  size_t address_size =
      view.src_address.empty() ? view.dst_address.size() : view.src_address.size();
  if (address_size == 4) {
    info["protocol_ver_id"] = 4;
    info["protocol_ver"] = "Internet Protocol version 4 (IPv4)";
  } else if (address_size == 16) {
    info["protocol_ver_id"] = 6;
    info["protocol_ver"] = "Internet Protocol version 6 (IPv6)";
  }

  Enumerated direction = classifyDirection(record.direction());
  info["direction_id"] = direction.id;
  info["direction"] = direction.caption;

  // Only a loopback flow has a boundary we know for sure; whether a peer is internal or
  // external is the inventory's business, not the datapath's.
  bool loopback = (!view.src_address.empty() && isLoopback(view.src_address)) ||
                  (!view.dst_address.empty() && isLoopback(view.dst_address));
  if (loopback) {
    info["boundary_id"] = 1;
    info["boundary"] = "Localhost";
  }
  return info;
}

Json renderTraffic(const FlowView& view) {
  // OCSF counts from the source: bytes_out is source to destination.
  return {{"bytes", view.bytes_forward + view.bytes_reverse},
          {"bytes_in", view.bytes_reverse},
          {"bytes_out", view.bytes_forward},
          {"packets", view.packets_forward + view.packets_reverse},
          {"packets_in", view.packets_reverse},
          {"packets_out", view.packets_forward}};
}

Json renderUnmapped(const telemetry::FlowRecord& record, const std::string& community_id) {
  Json unmapped = Json::object();
  unmapped["verdict"] = formatVerdict(record.verdict());
  if (record.verdict() == telemetry::VERDICT_AUDIT) {
    unmapped["would_deny"] = true;
  }
  if (!community_id.empty()) {
    unmapped["community_id"] = community_id;
  }
  if (!record.agent_id().empty()) {
    unmapped["agent_id"] = record.agent_id();
  }
  unmapped["sequence"] = record.sequence();
  unmapped["policy_version"] = record.policy_version();
  if (!record.policy_hash().empty()) {
    unmapped["policy_hash"] = record.policy_hash();
  }

  const telemetry::Workload& workload = record.workload();
  Json workload_json = Json::object();
  if (!workload.name().empty()) {
    workload_json["name"] = workload.name();
  }
  workload_json["labels"] = renderLabels(workload.labels());
  if (!workload.cgroup().empty()) {
    workload_json["cgroup"] = workload.cgroup();
  }
  if (workload.cgroup_id() != 0) {
    workload_json["cgroup_id"] = workload.cgroup_id();
  }
  unmapped["workload"] = std::move(workload_json);

  Json peer_json = Json::object();
  if (!record.peer().name().empty()) {
    peer_json["name"] = record.peer().name();
  }
  peer_json["labels"] = renderLabels(record.peer().labels());
  unmapped["peer"] = std::move(peer_json);
  return unmapped;
}

}  // namespace

std::string renderOcsf(const telemetry::FlowRecord& record) {
  FlowView view = orientFlow(record);
  std::string community_id = recordCommunityId(record);
  Json event = Json::object();
  Json unmapped = renderUnmapped(record, community_id);

  addClassification(event, record);
  addOccurrence(event, unmapped, record);
  event["message"] = describeFlow(record, view);
  event["metadata"] = renderMetadata(record, community_id);

  const std::string& host = record.host();
  std::string local_ip = view.local_is_source ? view.src_ip : view.dst_ip;
  std::string hostname = isHostname(host) ? host : std::string();
  if (!host.empty()) {
    Json device = renderEndpoint(local_ip, std::nullopt, host, hostname);
    device["type_id"] = 0;
    device["type"] = "Unknown";
    event["device"] = std::move(device);
  }

  // The task in whose context the flow was judged (docs/siem.md). pid 0 means none owned it, as
  // for ingress packets, which the kernel handles outside any task.
  const telemetry::Workload& workload = record.workload();
  if (workload.pid() != 0) {
    Json process = {{"pid", workload.pid()}};
    if (!workload.command().empty()) {
      process["name"] = workload.command();
    }
    process["user"] = {{"uid", std::to_string(workload.uid())}};
    event["actor"] = {{"process", std::move(process)}};
  }

  Json local = renderEndpoint(local_ip, view.local_is_source ? view.src_port : view.dst_port,
                              workload.name(), hostname);
  Json peer = renderEndpoint(view.local_is_source ? view.dst_ip : view.src_ip,
                             view.local_is_source ? view.dst_port : view.src_port,
                             record.peer().name(), "");
  event["src_endpoint"] = view.local_is_source ? local : peer;
  event["dst_endpoint"] = view.local_is_source ? peer : local;
  event["connection_info"] = renderConnectionInfo(record, view);
  if (record.event() == telemetry::FLOW_EVENT_END) {
    event["traffic"] = renderTraffic(view);
  }
  if (!record.rule().empty()) {
    event["firewall_rule"] = {{"name", record.rule()},
                              {"uid", record.rule()},
                              {"version", std::to_string(record.policy_version())}};
  }

  if (view.icmp) {
    unmapped["icmp"] = {{"type", record.local_port()}, {"code", record.peer_port()}};
  }
  event["unmapped"] = std::move(unmapped);

  // Replace, not throw: a task's command name is whatever bytes it chose.
  return event.dump(-1, ' ', false, Json::error_handler_t::replace);
}

}  // namespace mseg::format
