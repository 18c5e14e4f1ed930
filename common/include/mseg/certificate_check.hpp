// A program's own TLS certificate checked at start: an expired one makes every handshake fail
// later with a message that names neither the file nor the date, so it is said up front.
#pragma once

#include <chrono>
#include <string>

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

// Logs an error when the certificate in `path` (given by `setting`, e.g. --tls-cert) has expired
// or is not valid yet, a warning when it expires within kCertificateWarnDays, nothing otherwise.
// Returns whether it is valid at `now`. Thread-safe.
bool checkOwnCertificate(spdlog::logger& log, const std::string& setting, const std::string& path,
                         std::chrono::system_clock::time_point now);

}  // namespace mseg
