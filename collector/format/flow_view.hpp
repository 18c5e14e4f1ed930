// A flow record seen the way SIEM formats describe flows: from the side that opened it (source)
// to the other (destination). Internal to mseg_format.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "microseg/telemetry/v1/telemetry.pb.h"

namespace mseg::format {

namespace telemetry = microseg::telemetry::v1;

struct FlowView {
  // Egress records (and records without a direction) were opened by the local workload.
  bool local_is_source = true;

  // Network byte order: 4 bytes for IPv4 (IPv4-mapped IPv6 addresses unmapped), 16
  // for IPv6; empty when the record's address has another length.
  std::string src_address;
  std::string dst_address;
  // Text form (dotted quad, RFC 5952); empty when the address is malformed.
  std::string src_ip;
  std::string dst_ip;

  // Transport ports; empty for ICMP and for values out of range.
  std::optional<uint16_t> src_port;
  std::optional<uint16_t> dst_port;

  bool icmp = false;  // ICMP or ICMPv6: the record's ports carry type and code
  std::optional<uint8_t> icmp_type;
  std::optional<uint8_t> icmp_code;

  // Counters relative to the origin: forward is source to destination.
  uint64_t bytes_forward = 0;
  uint64_t bytes_reverse = 0;
  uint64_t packets_forward = 0;
  uint64_t packets_reverse = 0;
};

FlowView orientFlow(const telemetry::FlowRecord& record);

// Lower-case IANA keyword ("tcp", "ipv6-icmp"); empty for protocols we do not name.
std::string_view formatProtocol(uint32_t protocol);
// The words used in every format: "allow", "deny", "audit"; "unspecified" otherwise.
std::string_view formatVerdict(telemetry::Verdict verdict);
// "egress", "ingress"; "unspecified" otherwise.
std::string_view formatDirection(telemetry::Direction direction);
// How every format names an event.
struct EventNames {
  std::string_view word;    // "start", "end", "denied", "unspecified": syslog's event SD-PARAM
  std::string_view id;      // "flow-start"...: CEF signature id, syslog MSGID; empty if unknown
  std::string_view phrase;  // "flow started"...: CEF name, the start of OCSF's message
};
EventNames nameEvent(telemetry::FlowEvent event);

inline uint64_t toMillis(uint64_t nanos) { return nanos / 1'000'000; }

// Labels sorted by key, so that rendered records are byte-for-byte reproducible.
std::vector<std::pair<std::string, std::string>> sortLabels(
    const google::protobuf::Map<std::string, std::string>& labels);
// "key=value,key=value", sorted by key; empty for no labels.
std::string joinLabels(const google::protobuf::Map<std::string, std::string>& labels);

// The record's community_id when the agent set it, else computed from the flow; empty when the
// record's addresses cannot be hashed.
std::string recordCommunityId(const telemetry::FlowRecord& record);

}  // namespace mseg::format
