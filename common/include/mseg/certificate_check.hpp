// A program's own TLS files checked at start and by configuration checks: an expired
// certificate or a key of another certificate makes every handshake fail later with a message
// that names neither the file nor the cause, so it is said up front.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <spdlog/logger.h>

#include "mseg/result.hpp"

namespace mseg {

// Certificates that expire within this many days are warned about at start.
inline constexpr int kCertificateWarnDays = 30;

struct CertificateValidity {
  std::chrono::system_clock::time_point not_before;
  std::chrono::system_clock::time_point not_after;
};

// The validity period of the first PEM certificate in `path`; fails naming the file.
Result<CertificateValidity> readCertificateValidity(const std::string& path);

// One TLS file and the setting that names it, e.g. {"tls.cert", "/etc/microseg/collector.crt"}.
// An empty path means the setting is not given; it is not checked.
struct TlsFile {
  std::string setting;
  std::string path;
};

// What makes a program's TLS files unusable, one message per problem, each naming the setting,
// the file and the cause: a file that cannot be read; a certificate or CA file that holds no
// PEM certificate, a key file that holds no PEM private key (or only one protected by a
// passphrase); a key that does not belong to the certificate; with `valid_at`, a certificate
// (or a CA certificate) that has expired or is not valid yet at that time. Empty when all is
// usable. Thread-safe.
std::vector<std::string> checkTlsFiles(const TlsFile& cert, const TlsFile& key, const TlsFile& ca,
                                       std::optional<std::chrono::system_clock::time_point>
                                           valid_at);

// Logs an error when the certificate in `path` (given by `setting`, e.g. --tls-cert) has expired
// or is not valid yet, a warning when it expires within kCertificateWarnDays, nothing otherwise.
// Returns whether it is valid at `now`. Thread-safe.
bool checkOwnCertificate(spdlog::logger& log, const std::string& setting, const std::string& path,
                         std::chrono::system_clock::time_point now);

}  // namespace mseg
