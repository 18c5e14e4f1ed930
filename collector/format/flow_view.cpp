#include "flow_view.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

#include "mseg/format/community_id.hpp"

namespace mseg::format {
namespace {

constexpr uint8_t kIpv4MappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

// The datapath keys both families in one IPv6 space, so an IPv4 peer may arrive as
// ::ffff:a.b.c.d. Such an address never appears in an IPv6 packet: on the wire, and so for
// SIEMs and the Community ID, it is the IPv4 address.
std::string normalizeAddress(const std::string& bytes) {
  if (bytes.size() == 16 && std::memcmp(bytes.data(), kIpv4MappedPrefix, 12) == 0) {
    return bytes.substr(12);
  }
  if (bytes.size() == 4 || bytes.size() == 16) {
    return bytes;
  }
  return {};
}

std::string formatAddress(const std::string& bytes) {
  if (bytes.empty()) {
    return {};
  }
  char text[INET6_ADDRSTRLEN];
  int family = bytes.size() == 4 ? AF_INET : AF_INET6;
  if (inet_ntop(family, bytes.data(), text, sizeof(text)) == nullptr) {
    return {};
  }
  return text;
}

std::optional<uint16_t> toPort(uint32_t value) {
  if (value > UINT16_MAX) {
    return std::nullopt;
  }
  return static_cast<uint16_t>(value);
}

std::optional<uint8_t> toIcmpField(uint32_t value) {
  if (value > UINT8_MAX) {
    return std::nullopt;
  }
  return static_cast<uint8_t>(value);
}

}  // namespace

FlowView orientFlow(const telemetry::FlowRecord& record) {
  FlowView view;
  view.local_is_source = record.direction() != telemetry::DIRECTION_INGRESS;

  std::string local = normalizeAddress(record.local_address());
  std::string peer = normalizeAddress(record.peer_address());
  view.src_address = view.local_is_source ? local : peer;
  view.dst_address = view.local_is_source ? peer : local;
  view.src_ip = formatAddress(view.src_address);
  view.dst_ip = formatAddress(view.dst_address);

  // For ICMP the record keeps the type in local_port and the code in peer_port whatever the
  // direction, so only transport ports follow the orientation.
  view.icmp = record.protocol() == IPPROTO_ICMP || record.protocol() == IPPROTO_ICMPV6;
  if (view.icmp) {
    view.icmp_type = toIcmpField(record.local_port());
    view.icmp_code = toIcmpField(record.peer_port());
  } else {
    uint32_t local_port = record.local_port();
    uint32_t peer_port = record.peer_port();
    view.src_port = toPort(view.local_is_source ? local_port : peer_port);
    view.dst_port = toPort(view.local_is_source ? peer_port : local_port);
  }

  // The record counts from the local side: out is local to peer.
  view.bytes_forward = view.local_is_source ? record.bytes_out() : record.bytes_in();
  view.bytes_reverse = view.local_is_source ? record.bytes_in() : record.bytes_out();
  view.packets_forward = view.local_is_source ? record.packets_out() : record.packets_in();
  view.packets_reverse = view.local_is_source ? record.packets_in() : record.packets_out();
  return view;
}

std::string_view formatProtocol(uint32_t protocol) {
  switch (protocol) {
    case IPPROTO_ICMP:
      return "icmp";
    case IPPROTO_TCP:
      return "tcp";
    case IPPROTO_UDP:
      return "udp";
    case IPPROTO_ICMPV6:
      return "ipv6-icmp";
    case IPPROTO_SCTP:
      return "sctp";
    default:
      return {};
  }
}

std::string_view formatVerdict(telemetry::Verdict verdict) {
  switch (verdict) {
    case telemetry::VERDICT_ALLOW:
      return "allow";
    case telemetry::VERDICT_DENY:
      return "deny";
    case telemetry::VERDICT_AUDIT:
      return "audit";
    default:
      return "unspecified";
  }
}

std::string_view formatDirection(telemetry::Direction direction) {
  switch (direction) {
    case telemetry::DIRECTION_EGRESS:
      return "egress";
    case telemetry::DIRECTION_INGRESS:
      return "ingress";
    default:
      return "unspecified";
  }
}

EventNames nameEvent(telemetry::FlowEvent event) {
  switch (event) {
    case telemetry::FLOW_EVENT_START:
      return {"start", "flow-start", "flow started"};
    case telemetry::FLOW_EVENT_END:
      return {"end", "flow-end", "flow ended"};
    case telemetry::FLOW_EVENT_DENIED:
      return {"denied", "flow-denied", "flow denied"};
    default:
      return {"unspecified", "", "flow"};
  }
}

std::vector<std::pair<std::string, std::string>> sortLabels(
    const google::protobuf::Map<std::string, std::string>& labels) {
  std::vector<std::pair<std::string, std::string>> sorted(labels.begin(), labels.end());
  std::sort(sorted.begin(), sorted.end());
  return sorted;
}

std::string joinLabels(const google::protobuf::Map<std::string, std::string>& labels) {
  std::string joined;
  for (const auto& [key, value] : sortLabels(labels)) {
    if (!joined.empty()) {
      joined += ',';
    }
    joined += key;
    joined += '=';
    joined += value;
  }
  return joined;
}

std::string recordCommunityId(const telemetry::FlowRecord& record) {
  if (!record.community_id().empty()) {
    return record.community_id();
  }
  auto computed = communityId(record);
  return computed.ok() ? std::move(computed).value() : std::string();
}

}  // namespace mseg::format
