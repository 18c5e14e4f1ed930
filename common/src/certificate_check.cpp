#include "mseg/certificate_check.hpp"

#include <openssl/asn1.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cstdio>
#include <ctime>
#include <memory>

#include <fmt/chrono.h>

namespace mseg {
namespace {

using Clock = std::chrono::system_clock;

Result<Clock::time_point> toTimePoint(const ASN1_TIME* time, const std::string& path) {
  std::tm broken_down{};
  if (time == nullptr || ASN1_TIME_to_tm(time, &broken_down) != 1) {
    return Error::invalid("certificate " + path + ": unreadable validity date");
  }
  return Clock::from_time_t(timegm(&broken_down));
}

std::string dateText(Clock::time_point time) {
  return fmt::format("{:%Y-%m-%d %H:%M:%S} UTC", fmt::gmtime(Clock::to_time_t(time)));
}

}  // namespace

Result<CertificateValidity> readCertificateValidity(const std::string& path) {
  std::unique_ptr<FILE, decltype(&std::fclose)> file(std::fopen(path.c_str(), "re"),
                                                     &std::fclose);
  if (!file) {
    return Error::fromErrno(errno, "read certificate " + path);
  }
  std::unique_ptr<X509, decltype(&X509_free)> cert(
      PEM_read_X509(file.get(), nullptr, nullptr, nullptr), &X509_free);
  if (!cert) {
    return Error::invalid("certificate " + path + ": no PEM certificate");
  }
  auto not_before = toTimePoint(X509_get0_notBefore(cert.get()), path);
  if (!not_before) {
    return not_before.error();
  }
  auto not_after = toTimePoint(X509_get0_notAfter(cert.get()), path);
  if (!not_after) {
    return not_after.error();
  }
  return CertificateValidity{*not_before, *not_after};
}

bool checkOwnCertificate(spdlog::logger& log, const std::string& setting, const std::string& path,
                         Clock::time_point now) {
  auto validity = readCertificateValidity(path);
  if (!validity) {
    log.error("cannot check own certificate, renew or fix it setting={} err={}", setting,
              validity.error().message());
    return false;
  }
  if (now >= validity->not_after) {
    log.error("own certificate has expired, every TLS handshake will fail; renew it "
              "setting={} file={} not_after=\"{}\"",
              setting, path, dateText(validity->not_after));
    return false;
  }
  if (now < validity->not_before) {
    log.error("own certificate is not valid yet, every TLS handshake will fail; check the "
              "clock or the certificate setting={} file={} not_before=\"{}\"",
              setting, path, dateText(validity->not_before));
    return false;
  }
  const auto left = std::chrono::duration_cast<std::chrono::hours>(validity->not_after - now);
  if (left < std::chrono::hours(24 * kCertificateWarnDays)) {
    log.warn("own certificate expires soon; renew it setting={} file={} not_after=\"{}\" "
             "days_left={}",
             setting, path, dateText(validity->not_after), left.count() / 24);
  }
  return true;
}

}  // namespace mseg
