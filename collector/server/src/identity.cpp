#include "mseg/collector/identity.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <grpc/grpc_security_constants.h>
#include <grpcpp/security/auth_context.h>

#include <algorithm>

namespace mseg::collector {
namespace {

std::string_view withoutRootDot(std::string_view name) {
  if (name.ends_with('.')) {
    name.remove_suffix(1);
  }
  return name;
}

char lowerAscii(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

}  // namespace

bool hostNamesEqual(std::string_view a, std::string_view b) {
  a = withoutRootDot(a);
  b = withoutRootDot(b);
  if (a.empty() || a.size() != b.size()) {
    return false;
  }
  return std::equal(a.begin(), a.end(), b.begin(),
                    [](char x, char y) { return lowerAscii(x) == lowerAscii(y); });
}

std::string canonicalHostName(std::string_view host) {
  std::string name(withoutRootDot(host));
  std::transform(name.begin(), name.end(), name.begin(), lowerAscii);
  return name;
}

bool PeerIdentity::names(std::string_view host) const {
  if (hostNamesEqual(common_name, host)) {
    return true;
  }
  return std::any_of(dns_names.begin(), dns_names.end(),
                     [&](const std::string& name) { return hostNamesEqual(name, host); });
}

const std::string& PeerIdentity::primaryName() const {
  static const std::string kNone;
  if (!common_name.empty()) {
    return common_name;
  }
  return dns_names.empty() ? kNone : dns_names.front();
}

std::string PeerIdentity::describe() const {
  return fmt::format("cn={} dns={}", common_name.empty() ? "-" : common_name,
                     dns_names.empty() ? "-" : fmt::format("{}", fmt::join(dns_names, ",")));
}

PeerIdentity identityFromAuthContext(const grpc::AuthContext& context, std::string address) {
  PeerIdentity identity;
  identity.address = std::move(address);
  for (const auto& value : context.FindPropertyValues(GRPC_X509_CN_PROPERTY_NAME)) {
    identity.common_name.assign(value.data(), value.size());
  }
  // peer_dns holds the DNS SANs only; x509_subject_alternative_name would mix in IP, URI and
  // e-mail SANs, which never name a host here.
  for (const auto& value : context.FindPropertyValues(GRPC_PEER_DNS_PROPERTY_NAME)) {
    identity.dns_names.emplace_back(value.data(), value.size());
  }
  return identity;
}

}  // namespace mseg::collector
