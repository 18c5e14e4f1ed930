#include "mseg/certificate_check.hpp"

#include <openssl/asn1.h>
#include <openssl/err.h>
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

using FilePtr = std::unique_ptr<FILE, decltype(&std::fclose)>;
using X509Ptr = std::unique_ptr<X509, decltype(&X509_free)>;
using KeyPtr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;

// A service has no one to type a passphrase: OpenSSL must not prompt on the terminal.
int refusePassphrase(char*, int, int, void*) { return -1; }

Result<FilePtr> openPem(const std::string& what, const std::string& path) {
  FilePtr file(std::fopen(path.c_str(), "re"), &std::fclose);
  if (!file) {
    return Error::fromErrno(errno, what + " " + path);
  }
  return file;
}

Result<CertificateValidity> validityOf(X509* cert, const std::string& path) {
  auto not_before = toTimePoint(X509_get0_notBefore(cert), path);
  if (!not_before) {
    return not_before.error();
  }
  auto not_after = toTimePoint(X509_get0_notAfter(cert), path);
  if (!not_after) {
    return not_after.error();
  }
  return CertificateValidity{*not_before, *not_after};
}

// Every PEM certificate in the file, in order; fails when there is none.
Result<std::vector<X509Ptr>> readCertificates(const TlsFile& file) {
  auto opened = openPem(file.setting, file.path);
  if (!opened) {
    return opened.error();
  }
  std::vector<X509Ptr> certs;
  while (X509* cert = PEM_read_X509(opened->get(), nullptr, refusePassphrase, nullptr)) {
    certs.emplace_back(cert, &X509_free);
  }
  ERR_clear_error();  // the read that ended the loop
  if (certs.empty()) {
    return Error::invalid(file.setting + " " + file.path + ": holds no PEM certificate");
  }
  return certs;
}

Result<KeyPtr> readKey(const TlsFile& file) {
  auto opened = openPem(file.setting, file.path);
  if (!opened) {
    return opened.error();
  }
  KeyPtr key(PEM_read_PrivateKey(opened->get(), nullptr, refusePassphrase, nullptr),
             &EVP_PKEY_free);
  ERR_clear_error();
  if (!key) {
    return Error::invalid(file.setting + " " + file.path +
                          ": holds no PEM private key (one protected by a passphrase cannot "
                          "be used)");
  }
  return key;
}

std::string subjectOf(X509* cert) {
  char text[256] = {};
  X509_NAME_oneline(X509_get_subject_name(cert), text, sizeof(text));
  return text;
}

// `which` is "" for a program's own certificate, "certificate SUBJECT " within a CA bundle.
void checkDates(const TlsFile& file, X509* cert, const std::string& which, Clock::time_point now,
                std::vector<std::string>& problems) {
  auto validity = validityOf(cert, file.path);
  if (!validity) {
    problems.push_back(file.setting + " " + validity.error().message());
    return;
  }
  const std::string place = file.setting + " " + file.path + ": " + which;
  if (now >= validity->not_after) {
    problems.push_back(place + "expired on " + dateText(validity->not_after));
  } else if (now < validity->not_before) {
    problems.push_back(place + "not valid before " + dateText(validity->not_before) +
                       " (check the clock)");
  }
}

}  // namespace

Result<CertificateValidity> readCertificateValidity(const std::string& path) {
  auto certs = readCertificates({"certificate", path});
  if (!certs) {
    return certs.error();
  }
  return validityOf(certs->front().get(), path);
}

std::vector<std::string> checkTlsFiles(const TlsFile& cert, const TlsFile& key, const TlsFile& ca,
                                       std::optional<Clock::time_point> valid_at) {
  std::vector<std::string> problems;
  std::optional<std::vector<X509Ptr>> own;
  if (!cert.path.empty()) {
    if (auto read = readCertificates(cert)) {
      own = std::move(*read);
      if (valid_at) {
        checkDates(cert, own->front().get(), "", *valid_at, problems);
      }
    } else {
      problems.push_back(read.error().message());
    }
  }
  if (!key.path.empty()) {
    auto read = readKey(key);
    if (!read) {
      problems.push_back(read.error().message());
    } else if (own && X509_check_private_key(own->front().get(), read->get()) != 1) {
      ERR_clear_error();
      problems.push_back(key.setting + " " + key.path + " does not belong to the certificate in " +
                         cert.setting + " " + cert.path);
    }
  }
  if (!ca.path.empty()) {
    auto read = readCertificates(ca);
    if (!read) {
      problems.push_back(read.error().message());
    } else if (valid_at) {
      for (const auto& authority : *read) {
        checkDates(ca, authority.get(), "certificate " + subjectOf(authority.get()) + " ",
                   *valid_at, problems);
      }
    }
  }
  return problems;
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
