// Names of the datapath's per-reason counters (enum mseg_reason in bpf/include/mseg/abi.h) and
// of verdicts, as tools and metrics show them.
#pragma once

#include <cstddef>
#include <cstdint>

#include "mseg/abi.h"

namespace mseg::agent {

// nullptr for a reason number that has no name (unused slots).
inline const char* reasonName(size_t reason) {
  switch (reason) {
    case MSEG_REASON_POLICY_DENY: return "policy_deny";
    case MSEG_REASON_POLICY_AUDIT: return "policy_audit";
    case MSEG_REASON_NO_POLICY: return "no_policy";
    case MSEG_REASON_SHORT_PACKET: return "short_packet";
    case MSEG_REASON_FLOW_TABLE_FULL: return "flow_table_full";
    case MSEG_REASON_IPV6_EXT_HEADER: return "ipv6_ext_header";
    case MSEG_REASON_REPLY_ADMITTED: return "reply_admitted";
    case MSEG_REASON_EVENT_LOST: return "event_lost";
    case MSEG_REASON_DENIAL_TABLE_FULL: return "denial_table_full";
    case MSEG_REASON_SOCKET_STORAGE: return "socket_storage";
    default: return nullptr;
  }
}

inline const char* verdictName(uint8_t verdict) {
  switch (verdict) {
    case MSEG_VERDICT_ALLOW: return "allow";
    case MSEG_VERDICT_AUDIT: return "audit";
    case MSEG_VERDICT_DENY: return "deny";
    default: return "-";
  }
}

}  // namespace mseg::agent
