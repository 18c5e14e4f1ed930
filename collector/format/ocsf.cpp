#include "mseg/format/ocsf.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "append.hpp"
#include "flow_view.hpp"
#include "mseg/format/product.hpp"

namespace mseg::format {
namespace {

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

constexpr std::string_view kReplacementUtf8 = "\xEF\xBF\xBD";

// The length of the well-formed UTF-8 sequence at the start of `text`, or, negated, that of its
// maximal ill-formed prefix (at least 1 byte): the part one U+FFFD replaces, as the Unicode
// standard recommends ("U+FFFD substitution of maximal subparts", chapter 3.9). Its table 3-7
// gives the byte ranges.
int measureUtf8Sequence(std::string_view text) {
  auto lead = static_cast<uint8_t>(text[0]);
  if (lead < 0x80) {
    return 1;
  }
  int trailing = 0;
  uint8_t low = 0x80;
  uint8_t high = 0xbf;
  if (lead >= 0xc2 && lead <= 0xdf) {
    trailing = 1;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    trailing = 2;
    low = lead == 0xe0 ? 0xa0 : 0x80;   // no overlong forms
    high = lead == 0xed ? 0x9f : 0xbf;  // no surrogates
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    trailing = 3;
    low = lead == 0xf0 ? 0x90 : 0x80;   // no overlong forms
    high = lead == 0xf4 ? 0x8f : 0xbf;  // nothing above U+10FFFF
  } else {
    return -1;
  }
  for (int i = 1; i <= trailing; ++i) {
    if (static_cast<size_t>(i) >= text.size()) {
      return -i;
    }
    auto byte = static_cast<uint8_t>(text[i]);
    if (byte < low || byte > high) {
      return -i;
    }
    low = 0x80;
    high = 0xbf;
  }
  return trailing + 1;
}

// `text` itself when it is valid UTF-8, else a copy in `scratch` with each maximal ill-formed
// subpart replaced by U+FFFD: a task's command name is whatever bytes it chose.
std::string_view toValidUtf8(std::string_view text, std::string& scratch) {
  size_t first_bad = 0;
  while (first_bad < text.size()) {
    int length = measureUtf8Sequence(text.substr(first_bad));
    if (length < 0) {
      break;
    }
    first_bad += static_cast<size_t>(length);
  }
  if (first_bad == text.size()) {
    return text;
  }

  scratch.assign(text.substr(0, first_bad));
  for (size_t i = first_bad; i < text.size();) {
    int length = measureUtf8Sequence(text.substr(i));
    if (length < 0) {
      scratch += kReplacementUtf8;
      i += static_cast<size_t>(-length);
    } else {
      scratch.append(text, i, static_cast<size_t>(length));
      i += static_cast<size_t>(length);
    }
  }
  return scratch;
}

// Bytes that can go into a JSON string as they are: printable ASCII but for quote and backslash.
constexpr std::array<bool, 256> kPlainBytes = [] {
  std::array<bool, 256> plain{};
  for (int byte = 0x20; byte < 0x80; ++byte) {
    plain[byte] = byte != '"' && byte != '\\';
  }
  return plain;
}();

bool isPlain(std::string_view text) {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return kPlainBytes[static_cast<uint8_t>(c)]; });
}

// RapidJSON's writer with a shortcut for text in which no byte needs escaping, nearly all of a
// record: it is copied into the buffer as it is, where RapidJSON would look at it byte by byte.
// Anything else goes through RapidJSON's own escaping. Extends Writer as RapidJSON's
// PrettyWriter does, through its protected Prefix and output stream.
class RecordWriter : public rapidjson::Writer<rapidjson::StringBuffer> {
public:
  using Writer::Writer;

  // `text` must be plain (isPlain).
  void plainString(std::string_view text) {
    Prefix(rapidjson::kStringType);
    char* out = os_->Push(text.size() + 2);
    out[0] = '"';
    std::memcpy(out + 1, text.data(), text.size());
    out[text.size() + 1] = '"';
  }
};

// A record's JSON, written into a buffer that a thread keeps from record to record (grown to the
// largest record it rendered), so that once warm a record renders without allocating. Attribute
// names are our own literals, plain by construction; values, and label keys, go through
// writeText(), which makes them valid UTF-8 first: RapidJSON would copy invalid bytes through,
// or stop mid-string when asked to validate.
class JsonWriter {
public:
  JsonWriter() : writer_(buffer_) {}

  void reset() {
    buffer_.Clear();
    writer_.Reset(buffer_);
  }

  std::string_view json() const { return {buffer_.GetString(), buffer_.GetSize()}; }

  void beginObject() { writer_.StartObject(); }
  void beginObject(std::string_view name) {
    writer_.plainString(name);
    writer_.StartObject();
  }
  void endObject() { writer_.EndObject(); }

  void text(std::string_view name, std::string_view value) {
    writer_.plainString(name);
    writeText(value);
  }
  void number(std::string_view name, uint64_t value) {
    writer_.plainString(name);
    writer_.Uint64(value);
  }
  void boolean(std::string_view name, bool value) {
    writer_.plainString(name);
    writer_.Bool(value);
  }
  void texts(std::string_view name, std::initializer_list<std::string_view> values) {
    writer_.plainString(name);
    writer_.StartArray();
    for (std::string_view value : values) {
      writeText(value);
    }
    writer_.EndArray();
  }

  // An object of the labels sorted by key.
  void labels(std::string_view name,
              const google::protobuf::Map<std::string, std::string>& labels) {
    sortLabels(labels, sorted_labels_);
    beginObject(name);
    for (const auto& [key, value] : sorted_labels_) {
      writeText(key);
      writeText(value);
    }
    endObject();
  }

  // Scratch space for a value being composed, such as the message.
  std::string& scratch() {
    scratch_.clear();
    return scratch_;
  }

private:
  void writeText(std::string_view value) {
    if (isPlain(value)) {
      writer_.plainString(value);
      return;
    }
    std::string_view valid = toValidUtf8(value, utf8_scratch_);
    writer_.String(valid.data(), static_cast<rapidjson::SizeType>(valid.size()));
  }

  rapidjson::StringBuffer buffer_;
  RecordWriter writer_;
  std::vector<LabelView> sorted_labels_;
  std::string scratch_;
  std::string utf8_scratch_;
};

void writeEndpoint(JsonWriter& json, std::string_view name, std::string_view ip,
                   std::optional<uint16_t> port, std::string_view endpoint_name,
                   std::string_view hostname) {
  json.beginObject(name);
  if (!ip.empty()) {
    json.text("ip", ip);
  }
  if (port) {
    json.number("port", *port);
  }
  if (!endpoint_name.empty()) {
    json.text("name", endpoint_name);
  }
  if (!hostname.empty()) {
    json.text("hostname", hostname);
  }
  json.endObject();
}

void appendNumber(std::string& text, uint64_t value) {
  fmt::format_int digits(value);
  text.append(digits.data(), digits.size());
}

void appendEndpoint(std::string& text, std::string_view ip, std::optional<uint16_t> port) {
  if (ip.empty()) {
    ip = "?";
  }
  if (!port) {
    text += ip;
    return;
  }
  bool ipv6 = ip.find(':') != std::string_view::npos;
  if (ipv6) {
    text += '[';
  }
  text += ip;
  text += ipv6 ? "]:" : ":";
  appendNumber(text, *port);
}

// One readable sentence for `message`, e.g. "flow started: egress tcp 198.18.0.10:43512 ->
// 198.18.0.20:5432, allowed by shop/web-to-db".
void describeFlow(const telemetry::FlowRecord& record, const FlowView& view,
                  std::string_view src_ip, std::string_view dst_ip, std::string& text) {
  text += nameEvent(record.event()).phrase;
  text += ": ";
  text += formatDirection(record.direction());
  text += ' ';
  std::string_view protocol = formatProtocol(record.protocol());
  if (protocol.empty()) {
    text += "protocol ";
    appendNumber(text, record.protocol());
  } else {
    text += protocol;
  }
  text += ' ';
  appendEndpoint(text, src_ip, view.src_port);
  text += " -> ";
  appendEndpoint(text, dst_ip, view.dst_port);
  if (view.icmp) {
    text += " type ";
    appendNumber(text, record.local_port());
    text += " code ";
    appendNumber(text, record.peer_port());
  }

  std::string_view judgement;
  switch (record.verdict()) {
    case telemetry::VERDICT_ALLOW:
      judgement = ", allowed";
      break;
    case telemetry::VERDICT_DENY:
      judgement = ", denied";
      break;
    case telemetry::VERDICT_AUDIT:
      judgement = ", allowed in audit mode, would be denied";
      break;
    default:
      break;
  }
  if (!judgement.empty()) {
    text += judgement;
    if (!record.rule().empty()) {
      text += " by ";
      text += record.rule();
    }
  }
  if (record.event() == telemetry::FLOW_EVENT_DENIED && record.attempts() > 0) {
    text += ", ";
    appendNumber(text, record.attempts());
    text += record.attempts() == 1 ? " attempt" : " attempts";
  }
}

void writeClassification(JsonWriter& json, const telemetry::FlowRecord& record) {
  Enumerated activity = classifyActivity(record.event());
  Outcome outcome = judgeVerdict(record.verdict());
  Enumerated status = classifyStatus(record.event());

  json.number("activity_id", activity.id);
  json.text("activity_name", activity.caption);
  json.number("category_uid", kNetworkCategoryUid);
  json.text("category_name", kNetworkActivityCaption);
  json.number("class_uid", kNetworkActivityClassUid);
  json.text("class_name", kNetworkActivityCaption);
  json.number("type_uid", uint64_t{kNetworkActivityClassUid} * 100 + activity.id);
  std::string& type_name = json.scratch();
  type_name += kNetworkActivityCaption;
  type_name += ": ";
  type_name += activity.caption;
  json.text("type_name", type_name);
  json.number("severity_id", outcome.severity.id);
  json.text("severity", outcome.severity.caption);
  json.number("status_id", status.id);
  json.text("status", status.caption);
  json.number("action_id", outcome.action.id);
  json.text("action", outcome.action.caption);
  json.number("disposition_id", outcome.disposition.id);
  json.text("disposition", outcome.disposition.caption);
}

// time is when the event happened: the end for END, the last attempt for DENIED.
void writeOccurrence(JsonWriter& json, const telemetry::FlowRecord& record) {
  json.number("time", toMillis(record.time_unix_nano()));
  json.number("timezone_offset", 0);
  if (record.start_unix_nano() != 0) {
    json.number("start_time", toMillis(record.start_unix_nano()));
  }
  bool ended =
      record.event() == telemetry::FLOW_EVENT_END || record.event() == telemetry::FLOW_EVENT_DENIED;
  if (ended) {
    json.number("end_time", toMillis(record.time_unix_nano()));
  }
  if (record.event() == telemetry::FLOW_EVENT_END) {
    json.number("duration", std::min(toMillis(record.duration_nano()), kIntegerMax));
  }
  if (record.event() == telemetry::FLOW_EVENT_DENIED && record.attempts() > 0) {
    json.number("count", std::min(record.attempts(), kIntegerMax));
  }
}

void writeMetadata(JsonWriter& json, const telemetry::FlowRecord& record,
                   std::string_view community_id) {
  json.beginObject("metadata");
  json.text("version", kOcsfVersion);
  json.beginObject("product");
  json.text("name", kProductName);
  json.text("vendor_name", kVendorName);
  json.text("version", productVersion());
  json.endObject();
  json.texts("profiles", {"host", "security_control"});
  if (!record.record_id().empty()) {
    json.text("uid", record.record_id());
  }
  // OCSF 1.1.0 has no community_uid (1.3.0 adds it to connection_info); correlating events of
  // one flow across tools is what correlation_uid is for.
  if (!community_id.empty()) {
    json.text("correlation_uid", community_id);
  }
  json.endObject();
}

// The host the agent runs on, whose name the record carries, at the local address of the flow.
void writeDevice(JsonWriter& json, std::string_view host, std::string_view hostname,
                 std::string_view local_ip) {
  if (host.empty()) {
    return;
  }
  json.beginObject("device");
  if (!local_ip.empty()) {
    json.text("ip", local_ip);
  }
  json.text("name", host);
  if (!hostname.empty()) {
    json.text("hostname", hostname);
  }
  json.number("type_id", 0);
  json.text("type", "Unknown");
  json.endObject();
}

// The task in whose context the flow was judged (docs/siem.md). pid 0 means none owned it, as
// for ingress packets, which the kernel handles outside any task.
void writeActor(JsonWriter& json, const telemetry::Workload& workload) {
  if (workload.pid() == 0) {
    return;
  }
  json.beginObject("actor");
  json.beginObject("process");
  json.number("pid", workload.pid());
  if (!workload.command().empty()) {
    json.text("name", workload.command());
  }
  json.beginObject("user");
  json.text("uid", fmt::format_int(workload.uid()).c_str());
  json.endObject();
  json.endObject();
  json.endObject();
}

void writeConnectionInfo(JsonWriter& json, const telemetry::FlowRecord& record,
                         const FlowView& view) {
  json.beginObject("connection_info");
  json.number("protocol_num", record.protocol());
  std::string_view protocol = formatProtocol(record.protocol());
  if (!protocol.empty()) {
    json.text("protocol_name", protocol);
  }

  size_t address_size =
      view.src_address.empty() ? view.dst_address.size() : view.src_address.size();
  if (address_size == 4) {
    json.number("protocol_ver_id", 4);
    json.text("protocol_ver", "Internet Protocol version 4 (IPv4)");
  } else if (address_size == 16) {
    json.number("protocol_ver_id", 6);
    json.text("protocol_ver", "Internet Protocol version 6 (IPv6)");
  }

  Enumerated direction = classifyDirection(record.direction());
  json.number("direction_id", direction.id);
  json.text("direction", direction.caption);

  // Only a loopback flow has a boundary we know for sure; whether a peer is internal or
  // external is the inventory's business, not the datapath's.
  if (view.src_address.isLoopback() || view.dst_address.isLoopback()) {
    json.number("boundary_id", 1);
    json.text("boundary", "Localhost");
  }
  json.endObject();
}

void writeTraffic(JsonWriter& json, const FlowView& view) {
  // OCSF counts from the source: bytes_out is source to destination.
  json.beginObject("traffic");
  json.number("bytes", view.bytes_forward + view.bytes_reverse);
  json.number("bytes_in", view.bytes_reverse);
  json.number("bytes_out", view.bytes_forward);
  json.number("packets", view.packets_forward + view.packets_reverse);
  json.number("packets_in", view.packets_reverse);
  json.number("packets_out", view.packets_forward);
  json.endObject();
}

void writeFirewallRule(JsonWriter& json, const telemetry::FlowRecord& record) {
  if (record.rule().empty()) {
    return;
  }
  json.beginObject("firewall_rule");
  json.text("name", record.rule());
  json.text("uid", record.rule());
  json.text("version", fmt::format_int(record.policy_version()).c_str());
  json.endObject();
}

// Our own attributes, and exact values of the ones OCSF's integer_t had to clamp.
void writeUnmapped(JsonWriter& json, const telemetry::FlowRecord& record,
                   std::string_view community_id) {
  json.beginObject("unmapped");
  json.text("verdict", formatVerdict(record.verdict()));
  if (record.verdict() == telemetry::VERDICT_AUDIT) {
    json.boolean("would_deny", true);
  }
  if (!community_id.empty()) {
    json.text("community_id", community_id);
  }
  if (!record.agent_id().empty()) {
    json.text("agent_id", record.agent_id());
  }
  json.number("sequence", record.sequence());
  json.number("policy_version", record.policy_version());
  if (!record.policy_hash().empty()) {
    json.text("policy_hash", record.policy_hash());
  }

  const telemetry::Workload& workload = record.workload();
  json.beginObject("workload");
  if (!workload.name().empty()) {
    json.text("name", workload.name());
  }
  json.labels("labels", workload.labels());
  if (!workload.cgroup().empty()) {
    json.text("cgroup", workload.cgroup());
  }
  if (workload.cgroup_id() != 0) {
    json.number("cgroup_id", workload.cgroup_id());
  }
  json.endObject();

  json.beginObject("peer");
  if (!record.peer().name().empty()) {
    json.text("name", record.peer().name());
  }
  json.labels("labels", record.peer().labels());
  json.endObject();

  uint64_t duration_ms = toMillis(record.duration_nano());
  if (record.event() == telemetry::FLOW_EVENT_END && duration_ms > kIntegerMax) {
    json.number("duration_ms", duration_ms);
  }
  if (record.event() == telemetry::FLOW_EVENT_DENIED && record.attempts() > kIntegerMax) {
    json.number("attempts", record.attempts());
  }
  if (record.protocol() == IPPROTO_ICMP || record.protocol() == IPPROTO_ICMPV6) {
    json.beginObject("icmp");
    json.number("type", record.local_port());
    json.number("code", record.peer_port());
    json.endObject();
  }
  json.endObject();
}

void writeEvent(JsonWriter& json, const telemetry::FlowRecord& record) {
  FlowView view = orientFlow(record);
  IpText src_ip(view.src_address);
  IpText dst_ip(view.dst_address);
  std::string_view local_ip = view.local_is_source ? src_ip.view() : dst_ip.view();
  std::string_view peer_ip = view.local_is_source ? dst_ip.view() : src_ip.view();
  std::optional<uint16_t> local_port = view.local_is_source ? view.src_port : view.dst_port;
  std::optional<uint16_t> peer_port = view.local_is_source ? view.dst_port : view.src_port;
  std::string community_id_scratch;
  std::string_view community_id = recordCommunityId(record, community_id_scratch);
  const std::string& host = record.host();
  std::string_view hostname = isHostname(host) ? std::string_view(host) : std::string_view();
  const telemetry::Workload& workload = record.workload();

  json.beginObject();
  writeClassification(json, record);
  writeOccurrence(json, record);
  std::string& message = json.scratch();
  describeFlow(record, view, src_ip.view(), dst_ip.view(), message);
  json.text("message", message);
  writeMetadata(json, record, community_id);
  writeDevice(json, host, hostname, local_ip);
  writeActor(json, workload);
  if (view.local_is_source) {
    writeEndpoint(json, "src_endpoint", local_ip, local_port, workload.name(), hostname);
    writeEndpoint(json, "dst_endpoint", peer_ip, peer_port, record.peer().name(), "");
  } else {
    writeEndpoint(json, "src_endpoint", peer_ip, peer_port, record.peer().name(), "");
    writeEndpoint(json, "dst_endpoint", local_ip, local_port, workload.name(), hostname);
  }
  writeConnectionInfo(json, record, view);
  if (record.event() == telemetry::FLOW_EVENT_END) {
    writeTraffic(json, view);
  }
  writeFirewallRule(json, record);
  writeUnmapped(json, record, community_id);
  json.endObject();
}

}  // namespace

void appendOcsf(const telemetry::FlowRecord& record, std::string& out) {
  thread_local JsonWriter json;
  json.reset();
  writeEvent(json, record);
  out += json.json();
}

std::string renderOcsf(const telemetry::FlowRecord& record) {
  std::string text;
  appendOcsf(record, text);
  return text;
}

}  // namespace mseg::format
