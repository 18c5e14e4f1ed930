#include "mseg/format/cef.hpp"

#include <netinet/in.h>

#include <array>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "append.hpp"
#include "flow_view.hpp"
#include "mseg/format/product.hpp"

namespace mseg::format {
namespace {

// CEF severities run 0-10 (0-3 Low, 4-6 Medium, 7-8 High, 9-10 Very-High). An allowed flow is
// routine, an audited one would have been denied, a denied one is the policy doing its job on
// traffic somebody attempted.
std::string_view rateSeverity(telemetry::Verdict verdict) {
  switch (verdict) {
    case telemetry::VERDICT_ALLOW:
      return "1";
    case telemetry::VERDICT_AUDIT:
      return "3";
    case telemetry::VERDICT_DENY:
      return "5";
    default:
      return "Unknown";
  }
}

// CEF's proto names the transport in upper case, as the standard's examples do; empty for
// protocols we do not name, which go by number.
std::string_view nameCefProtocol(uint32_t protocol) {
  switch (protocol) {
    case IPPROTO_ICMP:
      return "ICMP";
    case IPPROTO_TCP:
      return "TCP";
    case IPPROTO_UDP:
      return "UDP";
    case IPPROTO_ICMPV6:
      return "IPv6-ICMP";
    case IPPROTO_SCTP:
      return "SCTP";
    default:
      return {};
  }
}

void appendCefHeaderField(std::string_view text, std::string& out) {
  size_t copied = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c != '\\' && c != '|' && c != '\n' && c != '\r') {
      continue;
    }
    out.append(text, copied, i - copied);
    if (c == '\n' || c == '\r') {
      out += ' ';
    } else {
      out += '\\';
      out += c;
    }
    copied = i + 1;
  }
  out.append(text, copied);
}

// Bytes an extension value escapes; a table because values are most of a line's bytes.
constexpr std::array<bool, 256> kCefValueSpecials = [] {
  std::array<bool, 256> specials{};
  for (char c : {'\\', '=', '\n', '\r'}) {
    specials[static_cast<uint8_t>(c)] = true;
  }
  return specials;
}();

void appendCefValue(std::string_view text, std::string& out) {
  size_t copied = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (!kCefValueSpecials[static_cast<uint8_t>(c)]) {
      continue;
    }
    out.append(text, copied, i - copied);
    out += '\\';
    out += c == '\n' ? 'n' : c == '\r' ? 'r' : c;
    copied = i + 1;
  }
  out.append(text, copied);
}

// Space-separated key=value pairs written straight into the line; empty values are left out
// rather than sent as `key=`.
class Extension {
public:
  explicit Extension(std::string& line) : line_(line), start_(line.size()) {}

  void add(std::string_view key, std::string_view value) {
    if (value.empty()) {
      return;
    }
    beginPair(key);
    appendCefValue(value, line_);
  }

  void add(std::string_view key, uint64_t value) {
    fmt::format_int digits(value);
    add(key, std::string_view(digits.data(), digits.size()));
  }

  // A custom field (cs1, flexString1, ...) and the label that says what it holds.
  void addLabeled(std::string_view key, std::string_view label, std::string_view value) {
    if (value.empty()) {
      return;
    }
    add(key, value);
    addLabel(key, label);
  }

  void addLabeled(std::string_view key, std::string_view label, uint64_t value) {
    fmt::format_int digits(value);
    addLabeled(key, label, std::string_view(digits.data(), digits.size()));
  }

  // Labels as one value, "key=value,key=value" sorted by key.
  void addLabeled(std::string_view key, std::string_view label,
                  const google::protobuf::Map<std::string, std::string>& labels) {
    if (labels.empty()) {
      return;
    }
    thread_local std::vector<LabelView> sorted;
    sortLabels(labels, sorted);
    beginPair(key);
    for (size_t i = 0; i < sorted.size(); ++i) {
      if (i > 0) {
        line_ += ',';
      }
      appendCefValue(sorted[i].first, line_);
      appendCefValue("=", line_);
      appendCefValue(sorted[i].second, line_);
    }
    addLabel(key, label);
  }

private:
  void beginPair(std::string_view key) {
    if (line_.size() > start_) {
      line_ += ' ';
    }
    line_ += key;
    line_ += '=';
  }

  // Always after the pair it labels.
  void addLabel(std::string_view key, std::string_view label) {
    line_ += ' ';
    line_ += key;
    line_ += "Label=";
    appendCefValue(label, line_);
  }

  std::string& line_;
  size_t start_;
};

// The CEF keys of one end of the flow.
struct EndpointKeys {
  std::string_view ipv4;
  std::string_view ipv6;
  std::string_view ipv6_label;
  std::string_view port;
};

constexpr EndpointKeys kSourceKeys = {"src", "c6a2", "Source IPv6 Address", "spt"};
constexpr EndpointKeys kDestinationKeys = {"dst", "c6a3", "Destination IPv6 Address", "dpt"};

void addEndpoint(Extension& extension, const EndpointKeys& keys, bool ipv6,
                 const IpAddress& address, std::optional<uint16_t> port) {
  IpText ip(address);
  if (ipv6) {
    extension.addLabeled(keys.ipv6, keys.ipv6_label, ip.view());
  } else {
    extension.add(keys.ipv4, ip.view());
  }
  if (port) {
    extension.add(keys.port, *port);
  }
}

void addEndpoints(Extension& extension, const FlowView& view) {
  bool ipv6 = view.src_address.size() == 16 || view.dst_address.size() == 16;
  addEndpoint(extension, kSourceKeys, ipv6, view.src_address, view.src_port);
  addEndpoint(extension, kDestinationKeys, ipv6, view.dst_address, view.dst_port);
  if (view.icmp_type) {
    extension.addLabeled("cn1", "ICMP Type", *view.icmp_type);
  }
  if (view.icmp_code) {
    extension.addLabeled("cn2", "ICMP Code", *view.icmp_code);
  }
}

// The CEF keys of the local side: the source's of an egress flow, the destination's of an
// ingress one.
struct LocalKeys {
  std::string_view host;
  std::string_view pid;
  std::string_view process;
  std::string_view uid;
};

constexpr LocalKeys kLocalSourceKeys = {"shost", "spid", "sproc", "suid"};
constexpr LocalKeys kLocalDestinationKeys = {"dhost", "dpid", "dproc", "duid"};

// The local host and the process owning the socket.
void addLocalSide(Extension& extension, const telemetry::FlowRecord& record, const FlowView& view) {
  const LocalKeys& keys = view.local_is_source ? kLocalSourceKeys : kLocalDestinationKeys;
  const telemetry::Workload& workload = record.workload();

  extension.add(keys.host, record.host());
  if (workload.pid() != 0) {
    extension.add(keys.pid, workload.pid());
    extension.add(keys.process, workload.command());
    extension.add(keys.uid, workload.uid());
  }
}

void appendHeader(const telemetry::FlowRecord& record, std::string& line) {
  EventNames names = nameEvent(record.event());
  std::string_view signature_id = names.id.empty() ? "flow" : names.id;

  line += "CEF:0|";
  for (std::string_view field : {kVendorName, kProductName, productVersion(), signature_id}) {
    appendCefHeaderField(field, line);
    line += '|';
  }
  appendCefHeaderField(names.phrase, line);
  if (record.verdict() == telemetry::VERDICT_AUDIT) {
    appendCefHeaderField(" (audit, policy would deny)", line);
  }
  line += '|';
  appendCefHeaderField(rateSeverity(record.verdict()), line);
  line += '|';
}

}  // namespace

std::string escapeCefHeader(std::string_view text) {
  std::string escaped;
  escaped.reserve(text.size());
  appendCefHeaderField(text, escaped);
  return escaped;
}

std::string escapeCefValue(std::string_view text) {
  std::string escaped;
  escaped.reserve(text.size());
  appendCefValue(text, escaped);
  return escaped;
}

void appendCef(const telemetry::FlowRecord& record, std::string& line) {
  FlowView view = orientFlow(record);
  appendHeader(record, line);
  Extension extension(line);

  extension.add("rt", toMillis(record.time_unix_nano()));
  if (record.start_unix_nano() != 0) {
    extension.add("start", toMillis(record.start_unix_nano()));
  }
  if (record.event() == telemetry::FLOW_EVENT_END ||
      record.event() == telemetry::FLOW_EVENT_DENIED) {
    extension.add("end", toMillis(record.time_unix_nano()));
  }
  extension.add("act", formatVerdict(record.verdict()));
  if (record.direction() == telemetry::DIRECTION_EGRESS) {
    extension.add("deviceDirection", 1);
  } else if (record.direction() == telemetry::DIRECTION_INGRESS) {
    extension.add("deviceDirection", 0);
  }
  std::string_view protocol = nameCefProtocol(record.protocol());
  if (protocol.empty()) {
    extension.add("proto", record.protocol());
  } else {
    extension.add("proto", protocol);
  }
  addEndpoints(extension, view);
  addLocalSide(extension, record, view);

  // CEF's own definitions: `in` is what flowed from source to destination, `out` the reverse.
  if (record.event() == telemetry::FLOW_EVENT_END) {
    extension.add("in", view.bytes_forward);
    extension.add("out", view.bytes_reverse);
  }
  if (record.event() == telemetry::FLOW_EVENT_DENIED && record.attempts() > 0) {
    extension.add("cnt", record.attempts());
  }

  std::string community_id_scratch;
  extension.addLabeled("cs1", "Rule", record.rule());
  extension.addLabeled("cs2", "Policy Version", record.policy_version());
  extension.addLabeled("cs3", "Community ID", recordCommunityId(record, community_id_scratch));
  extension.addLabeled("cs4", "Workload Labels", record.workload().labels());
  extension.addLabeled("cs5", "Peer Labels", record.peer().labels());
  extension.addLabeled("cs6", "Policy Hash", record.policy_hash());
  extension.addLabeled("flexString1", "Workload", record.workload().name());
  extension.addLabeled("flexString2", "Peer", record.peer().name());
  extension.add("dvchost", record.host());
  extension.add("deviceExternalId", record.agent_id());
  extension.add("externalId", record.record_id());
}

std::string renderCef(const telemetry::FlowRecord& record) {
  std::string line;
  // Typical lines are 600 to 900 bytes: one allocation instead of a doubling series.
  line.reserve(1024);
  appendCef(record, line);
  return line;
}

}  // namespace mseg::format
