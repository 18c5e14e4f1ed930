#include "metrics.hpp"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "logging.hpp"
#include "mseg/policy/yaml_tree.hpp"

namespace mseg::agent {
namespace {

constexpr const char* kContentType = "text/plain; version=0.0.4; charset=utf-8";
constexpr const char* kMetricsPath = "/metrics";
// Scrapers are few; the limits only keep a stuck or hostile client from holding the server.
// LIMITATION: they do not keep out a client that opens the 32 connections and trickles a byte
// within every timeout, nor a flood of connections the listen queue drains slowly: whoever can
// reach the address can keep scrapers out. docs/limitations.md says to bind it where only
// the scraper reaches.
constexpr unsigned int kConnectionLimit = 32;
constexpr unsigned int kConnectionTimeoutSeconds = 10;

[[noreturn]] void failInvariant(const std::string& message) {
  std::fprintf(stderr, "fatal: metrics: %s\n", message.c_str());
  std::abort();
}

bool isMetricName(std::string_view name) {
  auto first = [](char c) {
    return std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':';
  };
  auto rest = [&](char c) { return first(c) || std::isdigit(static_cast<unsigned char>(c)); };
  return !name.empty() && first(name.front()) && std::all_of(name.begin() + 1, name.end(), rest);
}

// Names starting with "__" are reserved for Prometheus' own use.
bool isLabelName(std::string_view name) {
  auto first = [](char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; };
  auto rest = [&](char c) { return first(c) || std::isdigit(static_cast<unsigned char>(c)); };
  return !name.empty() && first(name.front()) && std::all_of(name.begin() + 1, name.end(), rest) &&
         !name.starts_with("__");
}

// HELP text escapes backslash and newline; label values also the double quote.
void appendEscaped(std::string& out, std::string_view text, bool in_quotes) {
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && in_quotes) {
      out += "\\\"";
    } else {
      out += c;
    }
  }
}

void appendValue(std::string& out, double value) {
  if (std::isnan(value)) {
    out += "NaN";
    return;
  }
  if (std::isinf(value)) {
    out += value > 0 ? "+Inf" : "-Inf";
    return;
  }
  // Shortest digits that read back as the same double. Integral values in fixed notation, so a
  // counter reads 1000000 rather than 1e+06; the largest double has 309 digits.
  char buffer[400];
  char* end = buffer + sizeof(buffer);
  const bool integral = std::trunc(value) == value;
  auto written = integral ? std::to_chars(buffer, end, value, std::chars_format::fixed)
                          : std::to_chars(buffer, end, value);
  out.append(buffer, written.ptr);
}

// A numeric address to bind, parsed from "127.0.0.1:9464" or "[::1]:9464".
struct ListenAddress {
  sockaddr_storage storage{};
  bool ipv6 = false;
  uint16_t port = 0;

  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage); }
};

constexpr std::string_view kListenExamples = "such as 127.0.0.1:9464 or [::1]:9464";

Result<ListenAddress> parseListenAddress(const std::string& listen) {
  auto invalid = [&](const std::string& cause) {
    return Error::invalid("listen address \"" + listen + "\": " + cause);
  };
  const std::string_view text = listen;
  if (text.empty()) {
    return invalid("empty; expected HOST:PORT " + std::string(kListenExamples));
  }

  std::string host;
  std::string_view port_text;
  bool bracketed = text.front() == '[';
  if (bracketed) {
    size_t close = text.find(']');
    if (close == std::string_view::npos) {
      return invalid("no closing bracket after the IPv6 host; expected HOST:PORT " +
                     std::string(kListenExamples));
    }
    host = text.substr(1, close - 1);
    if (close + 1 < text.size() && text[close + 1] != ':') {
      return invalid("expected ':' and a port after the bracketed host");
    }
    port_text = close + 1 < text.size() ? text.substr(close + 2) : std::string_view();
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      return invalid("no port; expected HOST:PORT " + std::string(kListenExamples));
    }
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
  }
  if (host.empty()) {
    return invalid("no host; name the address to listen on, " + std::string(kListenExamples));
  }
  if (port_text.empty()) {
    return invalid("no port; expected HOST:PORT " + std::string(kListenExamples));
  }

  ListenAddress address;
  auto port = policy::parseDecimal(port_text);
  if (!port || *port > 65535) {
    return invalid("port \"" + std::string(port_text) + "\" is not a number from 0 to 65535");
  }
  address.port = static_cast<uint16_t>(*port);
  if (bracketed) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&address.storage);
    if (inet_pton(AF_INET6, host.c_str(), &in6->sin6_addr) != 1) {
      return invalid("\"" + host + "\" is not a numeric IPv6 address");
    }
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(address.port);
    address.ipv6 = true;
  } else {
    if (host.find(':') != std::string::npos) {
      return invalid("an IPv6 host goes in brackets, as in [::1]:9464");
    }
    auto* in4 = reinterpret_cast<sockaddr_in*>(&address.storage);
    if (inet_pton(AF_INET, host.c_str(), &in4->sin_addr) != 1) {
      return invalid("\"" + host +
                     "\" is not a numeric IPv4 address (host names are not resolved)");
    }
    in4->sin_family = AF_INET;
    in4->sin_port = htons(address.port);
  }
  return address;
}

MHD_Result queueResponse(MHD_Connection* connection, unsigned int status, MHD_Response* response) {
  if (response == nullptr) {
    return MHD_NO;
  }
  MHD_Result queued = MHD_queue_response(connection, status, response);
  MHD_destroy_response(response);
  return queued;
}

MHD_Response* plainResponse(std::string_view body) {
  // PERSISTENT: the body is a string literal, so libmicrohttpd need not copy it.
  MHD_Response* response = MHD_create_response_from_buffer(
      body.size(), const_cast<char*>(body.data()), MHD_RESPMEM_PERSISTENT);
  if (response != nullptr) {
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
  }
  return response;
}

void releaseText(void* held) { delete static_cast<std::shared_ptr<const std::string>*>(held); }

}  // namespace

void MetricsText::counter(const std::string& name, const std::string& help) {
  family(name, help, "counter");
}

void MetricsText::gauge(const std::string& name, const std::string& help) {
  family(name, help, "gauge");
}

MetricsText::Family* MetricsText::find(const std::string& name) {
  // Samples of one family usually follow each other: look at the latest family first.
  if (!families_.empty() && families_.back().name == name) {
    return &families_.back();
  }
  for (auto& family : families_) {
    if (family.name == name) {
      return &family;
    }
  }
  return nullptr;
}

void MetricsText::family(const std::string& name, const std::string& help, const char* type) {
  if (!isMetricName(name)) {
    failInvariant("invalid metric name \"" + name + "\"");
  }
  if (const Family* declared = find(name)) {
    if (std::strcmp(declared->type, type) != 0) {
      failInvariant("metric " + name + " declared as " + declared->type + " and as " + type);
    }
    return;
  }

  Family& added = families_.emplace_back(Family{name, type, {}});
  added.lines += "# HELP " + name + " ";
  appendEscaped(added.lines, help, false);
  added.lines += "\n# TYPE " + name + " " + type + "\n";
  text_stale_ = true;
}

void MetricsText::sample(const std::string& name, const MetricLabels& labels, double value) {
  Family* family = find(name);
  if (family == nullptr) {
    failInvariant("sample of metric " + name + ", which was not declared as counter or gauge");
  }

  std::string& out = family->lines;
  out += name;
  if (!labels.empty()) {
    char separator = '{';
    for (const auto& [label, label_value] : labels) {
      if (!isLabelName(label)) {
        failInvariant("invalid label name \"" + label + "\" on metric " + name);
      }
      out += separator;
      out += label;
      out += "=\"";
      appendEscaped(out, label_value, true);
      out += '"';
      separator = ',';
    }
    out += '}';
  }
  out += ' ';
  appendValue(out, value);
  out += '\n';
  text_stale_ = true;
}

const std::string& MetricsText::text() const {
  if (text_stale_) {
    text_.clear();
    for (const auto& family : families_) {
      text_ += family.lines;
    }
    text_stale_ = false;
  }
  return text_;
}

struct MetricsServer::Daemon {
  ~Daemon() {
    if (mhd != nullptr) {
      MHD_stop_daemon(mhd);
    }
  }

  MHD_Daemon* mhd = nullptr;
  // MHD_start_daemon returns only NULL on failure; its last log message (and errno as it logged
  // it) says why. Kept while it starts, when its threads may already run.
  std::atomic<bool> starting{true};
  std::mutex start_mutex;
  std::string start_message;
  int start_errno = 0;
};

// The callbacks libmicrohttpd calls, with access to the server's private state.
struct MetricsServerAccess {
  static void log(void* cls, const char* format, va_list args) {
    const int err = errno;
    char buffer[512];
    std::vsnprintf(buffer, sizeof(buffer), format, args);
    std::string message = buffer;
    while (!message.empty() && std::isspace(static_cast<unsigned char>(message.back()))) {
      message.pop_back();
    }
    if (!message.empty()) {
      message[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(message[0])));
    }

    auto* daemon = static_cast<MetricsServer::Daemon*>(cls);
    if (daemon->starting) {
      std::lock_guard lock(daemon->start_mutex);
      daemon->start_message = message;
      daemon->start_errno = err;
    }
    // Most messages are about one client's connection; debug keeps any client from flooding
    // the log. A failed start is returned to the caller, who logs it.
    logger("agent")->debug("metrics http server message=\"{}\"", message);
  }

  static MHD_Result handle(void* cls, MHD_Connection* connection, const char* url,
                           const char* method, const char* /*version*/, const char* /*upload_data*/,
                           size_t* upload_data_size, void** request_state) {
    if (std::strcmp(url, kMetricsPath) != 0) {
      return queueResponse(connection, MHD_HTTP_NOT_FOUND, plainResponse("not found\n"));
    }
    // libmicrohttpd sends no body in answer to HEAD.
    if (std::strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
        std::strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
      MHD_Response* response = plainResponse("method not allowed\n");
      if (response != nullptr) {
        MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
      }
      return queueResponse(connection, MHD_HTTP_METHOD_NOT_ALLOWED, response);
    }

    // libmicrohttpd closes the connection after a response queued in the first call for a
    // request; answering in the next one keeps it open for the scraper's next request.
    static char seen;
    if (*request_state == nullptr) {
      *request_state = &seen;
      return MHD_YES;
    }
    if (*upload_data_size != 0) {
      *upload_data_size = 0;  // a GET with a body: the body is ignored
      return MHD_YES;
    }

    auto* server = static_cast<MetricsServer*>(cls);
    std::shared_ptr<const std::string> text;
    {
      std::lock_guard lock(server->mutex_);
      text = server->published_;
    }
    if (text == nullptr) {
      return queueResponse(connection, MHD_HTTP_SERVICE_UNAVAILABLE,
                           plainResponse("no metrics published yet\n"));
    }

    // The response holds its own reference to the text, so a publish() during a slow send
    // neither waits for it nor frees the bytes being sent.
    auto* held = new std::shared_ptr<const std::string>(std::move(text));
    MHD_Response* response = MHD_create_response_from_buffer_with_free_callback_cls(
        (*held)->size(), const_cast<char*>((*held)->data()), &releaseText, held);
    if (response == nullptr) {
      delete held;
      return MHD_NO;
    }
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, kContentType);
    return queueResponse(connection, MHD_HTTP_OK, response);
  }
};

Result<std::unique_ptr<MetricsServer>> MetricsServer::start(const std::string& listen) {
  auto address = parseListenAddress(listen);
  if (!address) {
    return address.error();
  }

  std::unique_ptr<MetricsServer> server(new MetricsServer());
  server->daemon_ = std::make_unique<Daemon>();
  Daemon& daemon = *server->daemon_;
  // One internal thread polls every connection (epoll on Linux); answering is a pointer copy,
  // so a pool would add nothing.
  unsigned int flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG;
  if (address->ipv6) {
    flags |= MHD_USE_IPv6;  // also sets IPV6_V6ONLY: [::] does not take IPv4 too
  }
  errno = 0;
  daemon.mhd = MHD_start_daemon(
      flags, address->port, nullptr, nullptr, &MetricsServerAccess::handle, server.get(),
      MHD_OPTION_EXTERNAL_LOGGER, &MetricsServerAccess::log, &daemon, MHD_OPTION_SOCK_ADDR,
      address->get(), MHD_OPTION_CONNECTION_LIMIT, kConnectionLimit, MHD_OPTION_CONNECTION_TIMEOUT,
      kConnectionTimeoutSeconds, MHD_OPTION_END);
  const int start_errno = errno;
  daemon.starting = false;
  if (daemon.mhd == nullptr) {
    std::lock_guard lock(daemon.start_mutex);
    int code = daemon.start_errno != 0 ? daemon.start_errno : start_errno;
    std::string why = !daemon.start_message.empty() ? daemon.start_message
                      : code != 0                   ? std::string(std::strerror(code))
                                                    : "libmicrohttpd gave no reason";
    return Error(code != 0 ? code : EIO, "start http server on " + listen + ": " + why);
  }

  const MHD_DaemonInfo* bound = MHD_get_daemon_info(daemon.mhd, MHD_DAEMON_INFO_BIND_PORT);
  if (bound == nullptr || bound->port == 0) {
    return Error(EIO, "start http server on " + listen + ": the bound port is unknown");
  }
  server->port_ = bound->port;
  return server;
}

MetricsServer::~MetricsServer() {
  // Before the members the request handler reads are destroyed.
  daemon_.reset();
}

void MetricsServer::publish(std::string text) {
  auto published = std::make_shared<const std::string>(std::move(text));
  std::lock_guard lock(mutex_);
  published_.swap(published);
  // The previous text is freed after the lock is released (or by the last response holding it).
}

}  // namespace mseg::agent
