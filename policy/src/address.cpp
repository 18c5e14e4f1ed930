#include "mseg/policy/address.hpp"

#include <arpa/inet.h>

#include <algorithm>

#include <fmt/format.h>

#include "mseg/policy/yaml_tree.hpp"

namespace mseg::policy {
namespace {

constexpr Address kIpv4MappedPrefix = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

// Keeps the first `prefix_len` bits of `address` and zeroes the rest.
Address maskAddress(const Address& address, unsigned prefix_len) {
  Address masked{};
  for (unsigned i = 0; i < 16; ++i) {
    unsigned bits = prefix_len > i * 8 ? std::min(8u, prefix_len - i * 8) : 0;
    uint8_t mask = bits == 0 ? 0 : static_cast<uint8_t>(0xff << (8 - bits));
    masked[i] = address[i] & mask;
  }
  return masked;
}

}  // namespace

bool isIpv4Mapped(const Address& address) {
  return std::equal(kIpv4MappedPrefix.begin(), kIpv4MappedPrefix.begin() + 12, address.begin());
}

Result<Address> parseAddress(std::string_view text) {
  // inet_pton needs a terminated string; addresses are short, so a bounded copy is enough.
  if (text.size() >= INET6_ADDRSTRLEN) {
    return Error::invalid(fmt::format("`{}` is not an IP address", text));
  }
  std::string terminated(text);

  Address address = kIpv4MappedPrefix;
  if (inet_pton(AF_INET, terminated.c_str(), address.data() + 12) == 1) {
    return address;
  }
  if (inet_pton(AF_INET6, terminated.c_str(), address.data()) == 1) {
    return address;
  }
  return Error::invalid(fmt::format("`{}` is not an IP address", text));
}

Result<Cidr> parseCidr(std::string_view text) {
  size_t slash = text.find('/');
  std::string_view address_text = text.substr(0, slash);
  auto address = parseAddress(address_text);
  if (!address) {
    return Error::invalid(fmt::format("`{}` is not a CIDR: {}", text, address.error().message()));
  }

  bool ipv4 = address_text.find(':') == std::string_view::npos;
  unsigned max_len = ipv4 ? 32 : 128;
  unsigned len = max_len;
  if (slash != std::string_view::npos) {
    auto parsed = parseDecimal(text.substr(slash + 1));
    if (!parsed || *parsed > max_len) {
      return Error::invalid(
          fmt::format("`{}` is not a CIDR: the prefix length must be 0 to {}", text, max_len));
    }
    len = static_cast<unsigned>(*parsed);
  }

  Cidr cidr{*address, static_cast<uint8_t>(ipv4 ? kIpv4MappedPrefixLen + len : len)};
  Address network = maskAddress(cidr.address, cidr.prefix_len);
  if (network != cidr.address) {
    Cidr meant{network, cidr.prefix_len};
    return Error::invalid(
        fmt::format("CIDR `{}` has host bits set; the network is {}", text, formatCidr(meant)));
  }
  return cidr;
}

std::string formatAddress(const Address& address) {
  char text[INET6_ADDRSTRLEN] = {};
  if (isIpv4Mapped(address)) {
    inet_ntop(AF_INET, address.data() + 12, text, sizeof(text));
  } else {
    inet_ntop(AF_INET6, address.data(), text, sizeof(text));
  }
  return text;
}

std::string formatCidr(const Cidr& cidr) {
  if (cidr.prefix_len >= kIpv4MappedPrefixLen && isIpv4Mapped(cidr.address)) {
    return fmt::format("{}/{}", formatAddress(cidr.address),
                       cidr.prefix_len - kIpv4MappedPrefixLen);
  }
  char text[INET6_ADDRSTRLEN] = {};
  inet_ntop(AF_INET6, cidr.address.data(), text, sizeof(text));
  return fmt::format("{}/{}", text, cidr.prefix_len);
}

bool cidrContains(const Cidr& cidr, const Address& address) {
  return maskAddress(address, cidr.prefix_len) == cidr.address;
}

}  // namespace mseg::policy
