// Who is on the other end of a stream: the host names an agent's client certificate carries,
// and the rule that an agent reports only its own host's flows.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace grpc {
class AuthContext;
}

namespace mseg::collector {

// The names of a verified peer certificate: its subject CN and its DNS subject alternative
// names, as the TLS handshake presented them, plus the peer's transport address for logs.
struct PeerIdentity {
  std::string address;  // "ipv4:127.0.0.1:40112", as gRPC names the peer
  std::string common_name;
  std::vector<std::string> dns_names;

  // Whether the certificate names `host` (see hostNamesEqual), by CN or by a DNS SAN. Both
  // count: operators issue agent certificates with CN and SAN set to the host name, and older
  // tooling sets only the CN.
  bool names(std::string_view host) const;

  // The name to file this peer under before it sent a record: the CN, else the first DNS SAN,
  // else empty.
  const std::string& primaryName() const;

  // "cn=host-a dns=host-a,host-a.example" for log lines.
  std::string describe() const;

  bool empty() const { return common_name.empty() && dns_names.empty(); }
};

// Host names compare as DNS does: ASCII case-insensitive, a trailing root dot ignored. An
// empty name never matches.
bool hostNamesEqual(std::string_view a, std::string_view b);

// A host name in the form state is filed under: lower case, without a trailing dot.
std::string canonicalHostName(std::string_view host);

// Reads the peer's names from a call's auth context (the x509_common_name and peer_dns
// properties gRPC fills from the verified client certificate). Empty names when the peer
// presented no certificate.
PeerIdentity identityFromAuthContext(const grpc::AuthContext& context, std::string address);

}  // namespace mseg::collector
