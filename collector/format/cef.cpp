#include "mseg/format/cef.hpp"

#include <netinet/in.h>

#include <optional>
#include <string>

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

// CEF's proto names the transport in upper case, as the standard's examples do.
std::string formatCefProtocol(uint32_t protocol) {
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
      return std::to_string(protocol);
  }
}

// Space-separated key=value pairs; empty values are left out rather than sent as `key=`.
class Extension {
public:
  void add(std::string_view key, std::string_view value) {
    if (value.empty()) {
      return;
    }
    if (!text_.empty()) {
      text_ += ' ';
    }
    text_ += key;
    text_ += '=';
    text_ += escapeCefValue(value);
  }

  void add(std::string_view key, uint64_t value) { add(key, std::to_string(value)); }

  // A custom field (cs1, flexString1, ...) and the label that says what it holds.
  void addLabeled(std::string_view key, std::string_view label, std::string_view value) {
    if (value.empty()) {
      return;
    }
    add(key, value);
    add(std::string(key) + "Label", label);
  }

  const std::string& text() const { return text_; }

private:
  std::string text_;
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

void addEndpoint(Extension& extension, const EndpointKeys& keys, bool ipv6, const std::string& ip,
                 std::optional<uint16_t> port) {
  if (ipv6) {
    extension.addLabeled(keys.ipv6, keys.ipv6_label, ip);
  } else {
    extension.add(keys.ipv4, ip);
  }
  if (port) {
    extension.add(keys.port, *port);
  }
}

void addEndpoints(Extension& extension, const FlowView& view) {
  bool ipv6 = view.src_address.size() == 16 || view.dst_address.size() == 16;
  addEndpoint(extension, kSourceKeys, ipv6, view.src_ip, view.src_port);
  addEndpoint(extension, kDestinationKeys, ipv6, view.dst_ip, view.dst_port);
  if (view.icmp_type) {
    extension.addLabeled("cn1", "ICMP Type", std::to_string(*view.icmp_type));
  }
  if (view.icmp_code) {
    extension.addLabeled("cn2", "ICMP Code", std::to_string(*view.icmp_code));
  }
}

// The local host and the process owning the socket are the source of an egress flow and the
// destination of an ingress one.
void addLocalSide(Extension& extension, const telemetry::FlowRecord& record, const FlowView& view) {
  std::string_view prefix = view.local_is_source ? "s" : "d";
  const telemetry::Workload& workload = record.workload();

  extension.add(std::string(prefix) + "host", record.host());
  if (workload.pid() != 0) {
    extension.add(std::string(prefix) + "pid", workload.pid());
    extension.add(std::string(prefix) + "proc", workload.command());
    extension.add(std::string(prefix) + "uid", workload.uid());
  }
}

}  // namespace

std::string escapeCefHeader(std::string_view text) {
  std::string escaped;
  escaped.reserve(text.size());
  for (char c : text) {
    if (c == '\\' || c == '|') {
      escaped += '\\';
      escaped += c;
    } else if (c == '\n' || c == '\r') {
      escaped += ' ';
    } else {
      escaped += c;
    }
  }
  return escaped;
}

std::string escapeCefValue(std::string_view text) {
  std::string escaped;
  escaped.reserve(text.size());
  for (char c : text) {
    if (c == '\\' || c == '=') {
      escaped += '\\';
      escaped += c;
    } else if (c == '\n') {
      escaped += "\\n";
    } else if (c == '\r') {
      escaped += "\\r";
    } else {
      escaped += c;
    }
  }
  return escaped;
}

std::string renderCef(const telemetry::FlowRecord& record) {
  FlowView view = orientFlow(record);
  EventNames names = nameEvent(record.event());
  std::string_view signature_id = names.id.empty() ? "flow" : names.id;
  std::string name(names.phrase);
  if (record.verdict() == telemetry::VERDICT_AUDIT) {
    name += " (audit, policy would deny)";
  }
  Extension extension;

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
  extension.add("proto", formatCefProtocol(record.protocol()));
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

  extension.addLabeled("cs1", "Rule", record.rule());
  extension.addLabeled("cs2", "Policy Version", std::to_string(record.policy_version()));
  extension.addLabeled("cs3", "Community ID", recordCommunityId(record));
  extension.addLabeled("cs4", "Workload Labels", joinLabels(record.workload().labels()));
  extension.addLabeled("cs5", "Peer Labels", joinLabels(record.peer().labels()));
  extension.addLabeled("cs6", "Policy Hash", record.policy_hash());
  extension.addLabeled("flexString1", "Workload", record.workload().name());
  extension.addLabeled("flexString2", "Peer", record.peer().name());
  extension.add("dvchost", record.host());
  extension.add("deviceExternalId", record.agent_id());
  extension.add("externalId", record.record_id());

  std::string line = "CEF:0|";
  for (std::string_view field : {kVendorName, kProductName, productVersion(), signature_id,
                                 std::string_view(name), rateSeverity(record.verdict())}) {
    line += escapeCefHeader(field);
    line += '|';
  }
  line += extension.text();
  return line;
}

}  // namespace mseg::format
