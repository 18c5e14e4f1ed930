// Prometheus metrics of the agent: text in the exposition format, and an HTTP endpoint that
// serves the latest snapshot. The agent renders a snapshot once per tick on its own thread and
// publishes it; the HTTP server's threads only ever read the published text.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "mseg/result.hpp"

namespace mseg::agent {

using MetricLabels = std::map<std::string, std::string>;

// Builds one exposition-format text (version 0.0.4). Each metric family is declared once with
// its HELP and TYPE, then any number of samples; label values are escaped as the format says.
// A family may be declared again (the first HELP stays) and its samples are written together
// under its HELP and TYPE in any case, in the order the families were first declared.
// Metric and label names come from our code, not from input: an invalid name, a sample of an
// undeclared family or a family declared with two types is a bug and aborts with a message.
// Not thread-safe: one thread builds a text.
class MetricsText {
public:
  void counter(const std::string& name, const std::string& help);
  void gauge(const std::string& name, const std::string& help);
  // Label values must be UTF-8: Prometheus rejects a whole scrape over one invalid byte.
  // Integral values print without exponent; NaN and infinities as NaN, +Inf and -Inf.
  void sample(const std::string& name, const MetricLabels& labels, double value);
  const std::string& text() const;

private:
  struct Family {
    std::string name;
    const char* type;
    std::string lines;  // HELP, TYPE, then the samples
  };

  void family(const std::string& name, const std::string& help, const char* type);
  Family* find(const std::string& name);

  std::vector<Family> families_;
  mutable std::string text_;
  mutable bool text_stale_ = false;
};

// Serves GET /metrics with the last published text, over HTTP on `listen` ("127.0.0.1:9464",
// "[::1]:9464"; a host is required, so nothing listens on all addresses by accident). Other
// paths get 404, methods other than GET and HEAD on /metrics 405, and /metrics answers 503
// until the first publish(). Thread-safe: publish() may run while requests are served.
class MetricsServer {
public:
  // Binds exactly the address given (a numeric IPv4 address, or an IPv6 address in brackets;
  // port 0 lets the kernel pick) and serves from libmicrohttpd's own thread. Fails with EINVAL
  // and a message quoting `listen` when it is malformed, or with the bind error (EADDRINUSE,
  // EADDRNOTAVAIL...) when the server cannot start.
  static Result<std::unique_ptr<MetricsServer>> start(const std::string& listen);
  // Stops the server, waiting for requests in progress to end.
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Replaces the text served. Never waits on a request: it swaps a pointer under a lock that
  // requests hold only to copy that pointer.
  void publish(std::string text);
  uint16_t port() const { return port_; }  // the bound port (useful with port 0)

private:
  MetricsServer() = default;
  struct Daemon;
  std::unique_ptr<Daemon> daemon_;
  uint16_t port_ = 0;
  mutable std::mutex mutex_;
  std::shared_ptr<const std::string> published_;

  friend struct MetricsServerAccess;
};

}  // namespace mseg::agent
