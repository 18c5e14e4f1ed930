// Community ID v1 flow hashes (Corelight's specification), the identifier Zeek, Suricata,
// Elastic and most SIEMs use to join records of one flow across tools.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "microseg/telemetry/v1/telemetry.pb.h"
#include "mseg/result.hpp"

namespace mseg::format {

// The Community ID of a flow from `src_address`:`src_port` to `dst_address`:`dst_port`, for
// example "1:LQU9qZlK+B5F3KDmev6m5PMibrg=".
//
// Addresses are 4 or 16 bytes in network byte order, both of one family. For ICMP (1) and
// ICMPv6 (58) the ports are the message type (src_port) and code (dst_port), mapped as the
// specification says; protocols other than TCP, UDP, SCTP and the two ICMPs are hashed without
// ports, which are then ignored. The result is the same for both directions of a two-way flow.
// `base64` false renders the SHA-1 digest in lower-case hex instead. Fails with EINVAL when an
// address has another length or the families differ. Thread-safe.
Result<std::string> communityId(uint8_t protocol, std::span<const uint8_t> src_address,
                                std::span<const uint8_t> dst_address, uint16_t src_port,
                                uint16_t dst_port, uint16_t seed = 0, bool base64 = true);

// The Community ID of the flow as it was originated: local to peer for an egress record (and a
// record with no direction), peer to local for an ingress one. An IPv4-mapped IPv6 address
// (::ffff:a.b.c.d) is hashed as the IPv4 address it stands for, as network monitors see it on
// the wire. Fails with EINVAL, naming the record, on a malformed address, port or protocol.
// Thread-safe.
Result<std::string> communityId(const microseg::telemetry::v1::FlowRecord& record,
                                uint16_t seed = 0, bool base64 = true);

}  // namespace mseg::format
