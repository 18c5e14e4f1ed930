// One TCP or TLS connection to a syslog server, blocking with timeouts. Used by the thread of
// one SyslogOutput only.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "mseg/collector/config.hpp"
#include "mseg/result.hpp"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;

namespace mseg::collector {

// The TLS settings shared by every connection of an output: CA, optional client certificate.
class SyslogTlsContext {
public:
  // Loads the CA bundle (and the client certificate and key when given); fails naming the
  // file that does not load.
  static Result<std::shared_ptr<SyslogTlsContext>> create(const SyslogOutputConfig& config);
  ~SyslogTlsContext();

  SSL_CTX* get() const { return ctx_; }

private:
  explicit SyslogTlsContext(SSL_CTX* ctx) : ctx_(ctx) {}

  SSL_CTX* ctx_;
};

class SyslogConnection {
public:
  // Resolves `config.host`, connects to the first address that answers within `timeout`, and
  // for TLS completes the handshake, verifying the server certificate against the CA and the
  // name `server_name` (or `host`). The error says which step failed and why.
  static Result<std::unique_ptr<SyslogConnection>> open(
      const SyslogOutputConfig& config, const std::shared_ptr<SyslogTlsContext>& tls,
      std::chrono::milliseconds timeout);
  ~SyslogConnection();

  // Sends all of `data` or fails; a failed connection is not usable again.
  Status send(std::string_view data);

  // Whether the server closed its end (or sent anything, which a syslog server never does).
  bool closedByPeer() const;

  // Makes a send blocked in another thread return: shuts the socket down. Thread-safe.
  void abort();

private:
  SyslogConnection(int fd, SSL* ssl) : fd_(fd), ssl_(ssl) {}

  int fd_;
  SSL* ssl_;  // nullptr for plain TCP
};

}  // namespace mseg::collector
