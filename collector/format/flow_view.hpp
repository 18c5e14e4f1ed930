// A flow record seen the way SIEM formats describe flows: from the side that opened it (source)
// to the other (destination). Internal to mseg_format.
//
// Renderers run once per flow record on the agent's and the collector's hot paths, so nothing
// here allocates: addresses are held inline and scratch space is the caller's.
#pragma once

#include <netinet/in.h>

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "microseg/telemetry/v1/telemetry.pb.h"

namespace mseg::format {

namespace telemetry = microseg::telemetry::v1;

// An IP address in network byte order: 4 bytes for IPv4, 16 for IPv6, none when the record's
// address had another length.
class IpAddress {
public:
  IpAddress() = default;

  // The record's address; an IPv4-mapped IPv6 address (::ffff:a.b.c.d) becomes the IPv4 one.
  static IpAddress fromRecord(const std::string& bytes);

  bool empty() const { return size_ == 0; }
  size_t size() const { return size_; }
  std::span<const uint8_t> bytes() const { return {bytes_.data(), size_}; }
  bool isLoopback() const;

private:
  std::array<uint8_t, 16> bytes_{};
  uint8_t size_ = 0;
};

// The text form of an address: a dotted quad, or RFC 5952 for IPv6 as glibc's inet_ntop writes it;
// empty for an empty address.
class IpText {
public:
  explicit IpText(const IpAddress& address);

  std::string_view view() const { return {text_.data(), size_}; }

private:
  std::array<char, INET6_ADDRSTRLEN> text_{};
  size_t size_ = 0;
};

struct FlowView {
  // Egress records (and records without a direction) were opened by the local workload.
  bool local_is_source = true;

  IpAddress src_address;
  IpAddress dst_address;

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

// A label as key and value, viewing the record's map.
using LabelView = std::pair<std::string_view, std::string_view>;

// The labels sorted by key, so that rendered records are byte-for-byte reproducible. `sorted` is
// the caller's, cleared first and reused so that a thread sorts without allocating; the views
// live as long as `labels` is unchanged.
void sortLabels(const google::protobuf::Map<std::string, std::string>& labels,
                std::vector<LabelView>& sorted);

// The record's community_id when the agent set it, else computed from the flow into `scratch`;
// empty when the record's addresses cannot be hashed.
std::string_view recordCommunityId(const telemetry::FlowRecord& record, std::string& scratch);

}  // namespace mseg::format
