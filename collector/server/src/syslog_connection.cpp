#include "syslog_connection.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

namespace mseg::collector {
namespace {

// The oldest queued OpenSSL error as text, clearing the queue.
std::string opensslError() {
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) {
    return "unknown TLS error";
  }
  char text[256];
  ERR_error_string_n(code, text, sizeof(text));
  return text;
}

bool isIpAddress(const std::string& name) {
  in6_addr any{};
  return inet_pton(AF_INET, name.c_str(), &any) == 1 ||
         inet_pton(AF_INET6, name.c_str(), &any) == 1;
}

// A connected, blocking socket with send and receive timeouts, or the connect error.
Result<int> connectWithTimeout(const addrinfo& address, std::chrono::milliseconds timeout) {
  int fd = ::socket(address.ai_family, address.ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                    address.ai_protocol);
  if (fd < 0) {
    return Error::fromErrno(errno, "socket");
  }
  int err = 0;
  if (::connect(fd, address.ai_addr, address.ai_addrlen) != 0) {
    err = errno;
    if (err == EINPROGRESS) {
      pollfd waiting{fd, POLLOUT, 0};
      int ready = ::poll(&waiting, 1, static_cast<int>(timeout.count()));
      socklen_t length = sizeof(err);
      if (ready == 0) {
        err = ETIMEDOUT;
      } else if (ready < 0 || ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &length) != 0) {
        err = errno;
      }
    }
  }
  if (err != 0) {
    ::close(fd);
    return Error::fromErrno(err, "connect");
  }

  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  timeval limit{};
  limit.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  limit.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof(limit));
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
  return fd;
}

Result<SSL*> handshake(int fd, SSL_CTX* ctx, const std::string& server_name) {
  SSL* ssl = SSL_new(ctx);
  if (ssl == nullptr) {
    return Error(EPROTO, "tls: " + opensslError());
  }
  SSL_set_fd(ssl, fd);
  // An IP address is matched against IP SANs; a name against DNS SANs, and sent as SNI.
  if (isIpAddress(server_name)) {
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), server_name.c_str());
  } else {
    SSL_set1_host(ssl, server_name.c_str());
    SSL_set_tlsext_host_name(ssl, server_name.c_str());
  }

  if (SSL_connect(ssl) != 1) {
    long verify = SSL_get_verify_result(ssl);
    std::string reason = verify != X509_V_OK ? fmt::format("server certificate not accepted: {}",
                                                           X509_verify_cert_error_string(verify))
                                             : opensslError();
    SSL_free(ssl);
    return Error(EPROTO, "tls handshake: " + reason);
  }
  return ssl;
}

}  // namespace

Result<std::shared_ptr<SyslogTlsContext>> SyslogTlsContext::create(
    const SyslogOutputConfig& config) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) {
    return Error(EPROTO, "tls context: " + opensslError());
  }
  auto context = std::shared_ptr<SyslogTlsContext>(new SyslogTlsContext(ctx));
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);

  if (SSL_CTX_load_verify_locations(ctx, config.ca.c_str(), nullptr) != 1) {
    return Error(EINVAL, fmt::format("load CA {}: {}", config.ca, opensslError()));
  }
  if (!config.cert.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx, config.cert.c_str()) != 1) {
      return Error(EINVAL, fmt::format("load certificate {}: {}", config.cert, opensslError()));
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, config.key.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
      return Error(EINVAL, fmt::format("load key {}: {}", config.key, opensslError()));
    }
  }
  return context;
}

SyslogTlsContext::~SyslogTlsContext() { SSL_CTX_free(ctx_); }

Result<std::unique_ptr<SyslogConnection>> SyslogConnection::open(
    const SyslogOutputConfig& config, const std::shared_ptr<SyslogTlsContext>& tls,
    std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* addresses = nullptr;
  std::string port = std::to_string(config.port);
  if (int rc = ::getaddrinfo(config.host.c_str(), port.c_str(), &hints, &addresses); rc != 0) {
    return Error(EHOSTUNREACH, fmt::format("resolve {}: {}", config.host, gai_strerror(rc)));
  }

  Result<int> connected = Error(EHOSTUNREACH, "no address");
  for (const addrinfo* address = addresses; address != nullptr; address = address->ai_next) {
    connected = connectWithTimeout(*address, timeout);
    if (connected) {
      break;
    }
  }
  ::freeaddrinfo(addresses);
  if (!connected) {
    return connected.error();
  }

  SSL* ssl = nullptr;
  if (tls) {
    const std::string& name = config.server_name.empty() ? config.host : config.server_name;
    auto session = handshake(*connected, tls->get(), name);
    if (!session) {
      ::close(*connected);
      return session.error();
    }
    ssl = *session;
  }
  return std::unique_ptr<SyslogConnection>(new SyslogConnection(*connected, ssl));
}

SyslogConnection::~SyslogConnection() {
  if (ssl_ != nullptr) {
    // Without waiting for the server's close_notify: the socket closes next.
    SSL_shutdown(ssl_);
    SSL_free(ssl_);
  }
  ::close(fd_);
}

Status SyslogConnection::send(std::string_view data) {
  while (!data.empty()) {
    int chunk = static_cast<int>(std::min<size_t>(data.size(), 1 << 30));
    ssize_t sent = 0;
    if (ssl_ != nullptr) {
      int rc = SSL_write(ssl_, data.data(), chunk);
      if (rc <= 0) {
        return Error(EPIPE, "tls write: " + opensslError());
      }
      sent = rc;
    } else {
      sent = ::send(fd_, data.data(), static_cast<size_t>(chunk), MSG_NOSIGNAL);
      if (sent < 0 && errno == EINTR) {
        continue;
      }
      if (sent < 0) {
        return Error::fromErrno(errno, "send");
      }
    }
    data.remove_prefix(static_cast<size_t>(sent));
  }
  return {};
}

bool SyslogConnection::closedByPeer() const {
  pollfd check{fd_, POLLIN | POLLRDHUP, 0};
  return ::poll(&check, 1, 0) != 0;
}

void SyslogConnection::abort() { ::shutdown(fd_, SHUT_RDWR); }

}  // namespace mseg::collector
