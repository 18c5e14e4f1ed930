// Certificates for the collector's integration tests, made fresh in a test's directory with
// scripts/certs.sh (the operators' tool) and openssl; no key is ever committed.
#pragma once

#include <filesystem>
#include <string>

#include "mseg/result.hpp"

namespace mseg::collector::testing {

struct CertFiles {
  std::filesystem::path cert;
  std::filesystem::path key;
};

// The PEM text of a file, or an empty string when it cannot be read.
std::string readPem(const std::filesystem::path& path);

class TestPki {
public:
  // Under `dir`:
  //   main/     the agents' CA; the collector's server certificate for 127.0.0.1, ::1 and
  //             localhost; agent certificates for host-a and host-b (all from certs.sh)
  //   rogue/    another CA and its own certificate for host-a
  //   expired/  a host-a certificate signed by the main CA that expired in February 2020,
  //             made with `openssl ca` and explicit -startdate/-enddate
  // Fails with the failing command's stderr.
  static Result<TestPki> create(const std::filesystem::path& dir);

  std::filesystem::path caCert() const { return dir_ / "main/ca.crt"; }
  CertFiles server() const { return {dir_ / "main/collector.crt", dir_ / "main/collector.key"}; }
  CertFiles agent(const std::string& host) const {
    return {dir_ / ("main/agent-" + host + ".crt"), dir_ / ("main/agent-" + host + ".key")};
  }
  CertFiles rogueAgent() const {
    return {dir_ / "rogue/agent-host-a.crt", dir_ / "rogue/agent-host-a.key"};
  }
  CertFiles expiredAgent() const {
    return {dir_ / "expired/agent-host-a.crt", dir_ / "expired/agent-host-a.key"};
  }

private:
  explicit TestPki(std::filesystem::path dir) : dir_(std::move(dir)) {}

  std::filesystem::path dir_;
};

}  // namespace mseg::collector::testing
