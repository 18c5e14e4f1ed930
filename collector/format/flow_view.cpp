#include "flow_view.hpp"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "mseg/format/community_id.hpp"

namespace mseg::format {
namespace {

constexpr uint8_t kIpv4MappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
constexpr uint8_t kIpv6Loopback[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};

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

char* writeDottedQuad(const uint8_t* bytes, char* out) {
  for (size_t i = 0; i < 4; ++i) {
    if (i > 0) {
      *out++ = '.';
    }
    fmt::format_int digits(bytes[i]);
    out = std::copy(digits.data(), digits.data() + digits.size(), out);
  }
  return out;
}

char* writeHex16(uint16_t value, char* out) {
  static constexpr char kDigits[] = "0123456789abcdef";
  bool started = false;
  for (int shift = 12; shift >= 0; shift -= 4) {
    unsigned digit = (value >> shift) & 0xf;
    started = started || digit != 0 || shift == 0;
    if (started) {
      *out++ = kDigits[digit];
    }
  }
  return out;
}

// RFC 5952 text, exactly as glibc's inet_ntop writes it: the first longest run of two or more
// zero groups becomes "::", and ::a.b.c.d and ::ffff:a.b.c.d end in a dotted quad. glibc
// formats every group with sprintf: two addresses were a fifth of an IPv6 record's OCSF rendering.
char* writeIpv6(const uint8_t* bytes, char* out) {
  uint16_t groups[8];
  for (size_t i = 0; i < 8; ++i) {
    groups[i] = static_cast<uint16_t>(bytes[2 * i] << 8 | bytes[2 * i + 1]);
  }
  int best_start = -1;
  int best_length = 0;
  for (int i = 0; i < 8;) {
    int length = 0;
    while (i + length < 8 && groups[i + length] == 0) {
      ++length;
    }
    if (length > best_length) {
      best_start = i;
      best_length = length;
    }
    i += length > 0 ? length : 1;
  }
  if (best_length < 2) {
    best_start = -1;
  }

  for (int i = 0; i < 8; ++i) {
    if (best_start >= 0 && i >= best_start && i < best_start + best_length) {
      if (i == best_start) {
        *out++ = ':';
      }
      continue;
    }
    if (i > 0) {
      *out++ = ':';
    }
    bool embeds_ipv4 = i == 6 && best_start == 0 &&
                       (best_length == 6 || (best_length == 5 && groups[5] == 0xffff));
    if (embeds_ipv4) {
      return writeDottedQuad(bytes + 12, out);
    }
    out = writeHex16(groups[i], out);
  }
  if (best_start >= 0 && best_start + best_length == 8) {
    *out++ = ':';
  }
  return out;
}

}  // namespace

// The datapath keys both families in one IPv6 space, so an IPv4 peer may arrive as
// ::ffff:a.b.c.d. Such an address never appears in an IPv6 packet: on the wire, and so for
// SIEMs and the Community ID, it is the IPv4 address.
IpAddress IpAddress::fromRecord(const std::string& bytes) {
  IpAddress address;
  std::string_view kept(bytes);
  if (bytes.size() == 16 && std::memcmp(bytes.data(), kIpv4MappedPrefix, 12) == 0) {
    kept.remove_prefix(12);
  } else if (bytes.size() != 4 && bytes.size() != 16) {
    return address;
  }
  std::memcpy(address.bytes_.data(), kept.data(), kept.size());
  address.size_ = static_cast<uint8_t>(kept.size());
  return address;
}

bool IpAddress::isLoopback() const {
  if (size_ == 4) {
    return bytes_[0] == 127;
  }
  return size_ == 16 && std::memcmp(bytes_.data(), kIpv6Loopback, 16) == 0;
}

IpText::IpText(const IpAddress& address) {
  std::span<const uint8_t> bytes = address.bytes();
  char* end = text_.data();
  if (bytes.size() == 4) {
    end = writeDottedQuad(bytes.data(), end);
  } else if (bytes.size() == 16) {
    end = writeIpv6(bytes.data(), end);
  }
  size_ = static_cast<size_t>(end - text_.data());
}

FlowView orientFlow(const telemetry::FlowRecord& record) {
  FlowView view;
  view.local_is_source = record.direction() != telemetry::DIRECTION_INGRESS;

  IpAddress local = IpAddress::fromRecord(record.local_address());
  IpAddress peer = IpAddress::fromRecord(record.peer_address());
  view.src_address = view.local_is_source ? local : peer;
  view.dst_address = view.local_is_source ? peer : local;

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

void sortLabels(const google::protobuf::Map<std::string, std::string>& labels,
                std::vector<LabelView>& sorted) {
  sorted.clear();
  for (const auto& [key, value] : labels) {
    sorted.emplace_back(key, value);
  }
  // Keys are unique, so the order of keys alone decides.
  std::sort(sorted.begin(), sorted.end(),
            [](const LabelView& a, const LabelView& b) { return a.first < b.first; });
}

std::string_view recordCommunityId(const telemetry::FlowRecord& record, std::string& scratch) {
  if (!record.community_id().empty()) {
    return record.community_id();
  }
  auto computed = communityId(record);
  scratch = computed.ok() ? std::move(computed).value() : std::string();
  return scratch;
}

}  // namespace mseg::format
