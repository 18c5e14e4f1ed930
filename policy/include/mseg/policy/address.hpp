// IP addresses and CIDRs in the one space the datapath uses: IPv6, with IPv4 IPv4-mapped
// (::ffff:a.b.c.d), so a single LPM trie serves both families.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "mseg/result.hpp"

namespace mseg::policy {

using Address = std::array<uint8_t, 16>;  // network byte order

struct Cidr {
  Address address{};
  uint8_t prefix_len = 0;  // 0..128 in the IPv6 space; an IPv4 /n is 96 + n
};

inline constexpr uint8_t kIpv4MappedPrefixLen = 96;

bool isIpv4Mapped(const Address& address);

// "198.18.0.10" or "fd00::10". Fails with EINVAL naming the text.
Result<Address> parseAddress(std::string_view text);

// "198.18.0.0/24", "fd00::/8", or a bare address meaning /32 or /128. Fails with EINVAL on bad
// syntax, a prefix out of range, or host bits set (the message then names the network meant).
Result<Cidr> parseCidr(std::string_view text);

// Dotted quad for IPv4-mapped addresses, RFC 5952 text otherwise.
std::string formatAddress(const Address& address);
// IPv4 notation (a.b.c.d/n) for prefixes inside the IPv4-mapped block.
std::string formatCidr(const Cidr& cidr);

bool cidrContains(const Cidr& cidr, const Address& address);

}  // namespace mseg::policy
