// The agent's Prometheus metrics: exposition text as the format defines it, and the HTTP
// endpoint on loopback answering a plain socket client.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "metrics.hpp"

namespace mseg::agent {
namespace {

class MetricsTextTest : public ::testing::Test {
protected:
  MetricsText text_;
};

TEST_F(MetricsTextTest, WritesHelpAndTypeOnceBeforeTheSamplesOfEachFamily) {
  text_.counter("mseg_drops_total", "Drops by reason.");
  text_.sample("mseg_drops_total", {{"reason", "no_route"}}, 3);
  text_.counter("mseg_drops_total", "Drops by reason.");
  text_.sample("mseg_drops_total", {{"reason", "ring_full"}}, 4);
  text_.gauge("mseg_workloads", "Workloads known.");
  text_.sample("mseg_workloads", {}, 2);

  EXPECT_EQ(text_.text(),
            "# HELP mseg_drops_total Drops by reason.\n"
            "# TYPE mseg_drops_total counter\n"
            "mseg_drops_total{reason=\"no_route\"} 3\n"
            "mseg_drops_total{reason=\"ring_full\"} 4\n"
            "# HELP mseg_workloads Workloads known.\n"
            "# TYPE mseg_workloads gauge\n"
            "mseg_workloads 2\n");
}

TEST_F(MetricsTextTest, KeepsSamplesUnderTheirFamilyWhenFamiliesAlternate) {
  text_.gauge("a", "First.");
  text_.gauge("b", "Second.");
  text_.sample("a", {}, 1);
  text_.sample("b", {}, 2);
  text_.gauge("a", "First again.");
  text_.sample("a", {}, 3);

  EXPECT_EQ(text_.text(),
            "# HELP a First.\n# TYPE a gauge\na 1\na 3\n"
            "# HELP b Second.\n# TYPE b gauge\nb 2\n");
}

TEST_F(MetricsTextTest, DeclaresAFamilyWithoutSamples) {
  text_.counter("mseg_rule_hits_total", "Hits.");

  EXPECT_EQ(text_.text(),
            "# HELP mseg_rule_hits_total Hits.\n# TYPE mseg_rule_hits_total counter\n");
}

TEST_F(MetricsTextTest, EscapesBackslashQuoteAndNewlineInLabelValues) {
  text_.gauge("m", "M.");

  text_.sample("m", {{"path", "C:\\dir \"x\"\nnext"}}, 1);

  EXPECT_EQ(text_.text(),
            "# HELP m M.\n# TYPE m gauge\nm{path=\"C:\\\\dir \\\"x\\\"\\nnext\"} 1\n");
}

TEST_F(MetricsTextTest, EscapesBackslashAndNewlineButNotQuotesInHelp) {
  text_.gauge("m", "a \\ b\n\"c\"");

  EXPECT_EQ(text_.text(), "# HELP m a \\\\ b\\n\"c\"\n# TYPE m gauge\n");
}

TEST_F(MetricsTextTest, WritesLabelsInNameOrder) {
  text_.gauge("m", "M.");

  text_.sample("m", {{"verdict", "deny"}, {"rule", "db"}, {"a_b", ""}}, 1);

  EXPECT_EQ(text_.text(),
            "# HELP m M.\n# TYPE m gauge\nm{a_b=\"\",rule=\"db\",verdict=\"deny\"} 1\n");
}

TEST_F(MetricsTextTest, FormatsIntegersWithoutExponentAndOtherNumbersExactly) {
  const std::vector<std::pair<double, std::string>> cases = {
      {0, "0"},
      {42, "42"},
      {-3, "-3"},
      {1e6, "1000000"},
      {9007199254740992.0, "9007199254740992"},  // 2^53
      {1e21, "1000000000000000000000"},
      {0.25, "0.25"},
      {1.5e-7, "1.5e-07"},
      {std::numeric_limits<double>::quiet_NaN(), "NaN"},
      {std::numeric_limits<double>::infinity(), "+Inf"},
      {-std::numeric_limits<double>::infinity(), "-Inf"},
  };
  text_.gauge("m", "M.");

  for (const auto& [value, expected] : cases) {
    text_.sample("m", {}, value);
  }

  std::string expected_text = "# HELP m M.\n# TYPE m gauge\n";
  for (const auto& [value, expected] : cases) {
    expected_text += "m " + expected + "\n";
  }
  EXPECT_EQ(text_.text(), expected_text);
}

using MetricsTextDeathTest = MetricsTextTest;

TEST_F(MetricsTextDeathTest, AbortsOnASampleOfAnUndeclaredFamily) {
  EXPECT_DEATH(text_.sample("mseg_unknown", {}, 1),
               "fatal: metrics: sample of metric mseg_unknown, which was not declared");
}

TEST_F(MetricsTextDeathTest, AbortsOnInvalidNames) {
  EXPECT_DEATH(text_.gauge("1st", "M."), "invalid metric name \"1st\"");
  EXPECT_DEATH(text_.gauge("a-b", "M."), "invalid metric name \"a-b\"");

  text_.gauge("m", "M.");
  EXPECT_DEATH(text_.sample("m", {{"bad-label", "x"}}, 1), "invalid label name \"bad-label\"");
  EXPECT_DEATH(text_.sample("m", {{"__name__", "x"}}, 1), "invalid label name \"__name__\"");
}

TEST_F(MetricsTextDeathTest, AbortsOnAFamilyDeclaredWithTwoTypes) {
  text_.gauge("m", "M.");

  EXPECT_DEATH(text_.counter("m", "M."), "metric m declared as gauge and as counter");
}

// One HTTP/1.1 exchange over a plain socket, read until the server closes.
struct HttpReply {
  int status = 0;
  std::map<std::string, std::string> headers;  // names in lower case
  std::string body;
};

sockaddr_storage loopback(int family, uint16_t port) {
  sockaddr_storage address{};
  if (family == AF_INET6) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&address);
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    in6->sin6_addr = in6addr_loopback;
  } else {
    auto* in4 = reinterpret_cast<sockaddr_in*>(&address);
    in4->sin_family = AF_INET;
    in4->sin_port = htons(port);
    in4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  }
  return address;
}

// Sends `request` and returns all the server sent until it closed the connection.
std::optional<std::string> exchange(int family, uint16_t port, const std::string& request) {
  int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ADD_FAILURE() << "socket: " << std::strerror(errno);
    return std::nullopt;
  }
  // Bounds every connect, send and receive below.
  timeval timeout{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));

  std::string raw;
  sockaddr_storage address = loopback(family, port);
  bool sent = connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
              send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
                  static_cast<ssize_t>(request.size());
  char buffer[4096];
  ssize_t n = 0;
  while (sent && (n = recv(fd, buffer, sizeof(buffer), 0)) > 0) {
    raw.append(buffer, static_cast<size_t>(n));
  }
  int err = errno;
  close(fd);
  if (!sent || n < 0) {
    ADD_FAILURE() << "exchange with port " << port << ": " << std::strerror(err);
    return std::nullopt;
  }
  return raw;
}

std::string requestText(const std::string& method, const std::string& path,
                        const std::string& connection = "close") {
  return method + " " + path + " HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n" +
         "Connection: " + connection + "\r\n\r\n";
}

std::optional<HttpReply> httpRequest(int family, uint16_t port, const std::string& method,
                                     const std::string& path) {
  auto exchanged = exchange(family, port, requestText(method, path));
  if (!exchanged) {
    return std::nullopt;
  }
  const std::string& raw = *exchanged;

  size_t head_end = raw.find("\r\n\r\n");
  if (raw.compare(0, 9, "HTTP/1.1 ") != 0 || head_end == std::string::npos) {
    ADD_FAILURE() << "not an HTTP/1.1 response: " << raw;
    return std::nullopt;
  }
  HttpReply reply;
  reply.status = std::stoi(raw.substr(9, 3));
  size_t line = raw.find("\r\n") + 2;
  while (line < head_end) {
    size_t line_end = raw.find("\r\n", line);
    size_t colon = raw.find(':', line);
    std::string name = raw.substr(line, colon - line);
    for (auto& c : name) {
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    size_t value = raw.find_first_not_of(' ', colon + 1);
    reply.headers[name] = raw.substr(value, line_end - value);
    line = line_end + 2;
  }
  reply.body = raw.substr(head_end + 4);
  return reply;
}

class MetricsServerTest : public ::testing::Test {
protected:
  void SetUp() override {
    auto server = MetricsServer::start("127.0.0.1:0");
    ASSERT_TRUE(server) << server.error().message();
    server_ = std::move(*server);
  }

  std::optional<HttpReply> get(const std::string& path, const std::string& method = "GET") {
    return httpRequest(AF_INET, server_->port(), method, path);
  }

  std::unique_ptr<MetricsServer> server_;
};

TEST_F(MetricsServerTest, ServesThePublishedTextAtMetrics) {
  MetricsText text;
  text.counter("mseg_test_total", "A test counter.");
  text.sample("mseg_test_total", {{"rule", "web"}}, 7);

  server_->publish(text.text());
  auto reply = get("/metrics");

  EXPECT_NE(server_->port(), 0);
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->status, 200);
  EXPECT_EQ(reply->headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(reply->body, text.text());
}

TEST_F(MetricsServerTest, ServesTheLatestPublishedText) {
  server_->publish("first 1\n");
  server_->publish("second 2\n");

  auto reply = get("/metrics");

  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->body, "second 2\n");
}

TEST_F(MetricsServerTest, KeepsTheConnectionOpenForTheNextScrape) {
  server_->publish("m 1\n");

  auto raw =
      exchange(AF_INET, server_->port(),
               requestText("GET", "/metrics", "keep-alive") + requestText("GET", "/metrics"));

  ASSERT_TRUE(raw);
  size_t second = raw->find("HTTP/1.1 200 OK", 1);
  ASSERT_NE(second, std::string::npos) << *raw;
  EXPECT_EQ(raw->rfind("HTTP/1.1 200 OK", 0), 0u) << *raw;
  EXPECT_EQ(raw->substr(0, second).find("Connection: close"), std::string::npos) << *raw;
}

TEST_F(MetricsServerTest, AnswersHeadWithoutABody) {
  server_->publish("m 1\n");

  auto reply = get("/metrics", "HEAD");

  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->status, 200);
  EXPECT_EQ(reply->headers["content-length"], "4");
  EXPECT_EQ(reply->body, "");
}

TEST_F(MetricsServerTest, AnswersUnavailableBeforeTheFirstPublish) {
  auto reply = get("/metrics");

  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->status, 503);
}

TEST_F(MetricsServerTest, AnswersNotFoundForOtherPaths) {
  server_->publish("m 1\n");

  for (const char* path : {"/", "/metrics/", "/metricsx", "/favicon.ico"}) {
    auto reply = get(path);

    ASSERT_TRUE(reply) << path;
    EXPECT_EQ(reply->status, 404) << path;
  }
}

TEST_F(MetricsServerTest, RefusesMethodsOtherThanGetAndHead) {
  server_->publish("m 1\n");

  for (const char* method : {"POST", "PUT", "DELETE"}) {
    auto reply = get("/metrics", method);

    ASSERT_TRUE(reply) << method;
    EXPECT_EQ(reply->status, 405) << method;
    EXPECT_EQ(reply->headers["allow"], "GET, HEAD") << method;
  }
}

TEST_F(MetricsServerTest, ServesCompleteTextsWhilePublishing) {
  const std::string small(100, 'a');
  const std::string large(200000, 'b');
  server_->publish(small);

  std::atomic<bool> reading = true;
  std::thread publisher([&] {
    for (int i = 0; reading; i++) {
      server_->publish(i % 2 == 0 ? large : small);
    }
  });
  std::vector<std::string> bodies;
  for (int i = 0; i < 20; i++) {
    if (auto reply = get("/metrics")) {
      bodies.push_back(reply->body);
    }
  }
  reading = false;
  publisher.join();

  ASSERT_EQ(bodies.size(), 20u);
  for (const auto& body : bodies) {
    EXPECT_TRUE(body == small || body == large) << "a body of " << body.size() << " bytes";
  }
}

TEST(MetricsServerListenTest, ServesOnIpv6Loopback) {
  auto server = MetricsServer::start("[::1]:0");
  ASSERT_TRUE(server) << server.error().message();

  (*server)->publish("m 1\n");
  auto reply = httpRequest(AF_INET6, (*server)->port(), "GET", "/metrics");

  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->body, "m 1\n");
}

TEST(MetricsServerListenTest, RefusesListenAddressesWithoutHostOrPort) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "listen address \"\": empty; expected HOST:PORT such as 127.0.0.1:9464 or [::1]:9464"},
      {"9464",
       "listen address \"9464\": no port; expected HOST:PORT such as 127.0.0.1:9464 or "
       "[::1]:9464"},
      {":9464",
       "listen address \":9464\": no host; name the address to listen on, such as "
       "127.0.0.1:9464 or [::1]:9464"},
      {"[]:9464",
       "listen address \"[]:9464\": no host; name the address to listen on, such as "
       "127.0.0.1:9464 or [::1]:9464"},
      {"127.0.0.1:",
       "listen address \"127.0.0.1:\": no port; expected HOST:PORT such as 127.0.0.1:9464 or "
       "[::1]:9464"},
      {"[::1]",
       "listen address \"[::1]\": no port; expected HOST:PORT such as 127.0.0.1:9464 or "
       "[::1]:9464"},
      {"[::1:9464",
       "listen address \"[::1:9464\": no closing bracket after the IPv6 host; expected "
       "HOST:PORT such as 127.0.0.1:9464 or [::1]:9464"},
      {"[::1]9464",
       "listen address \"[::1]9464\": expected ':' and a port after the bracketed host"},
      {"127.0.0.1:65536",
       "listen address \"127.0.0.1:65536\": port \"65536\" is not a number from 0 to 65535"},
      {"127.0.0.1:http",
       "listen address \"127.0.0.1:http\": port \"http\" is not a number from 0 to 65535"},
      {"::1:9464", "listen address \"::1:9464\": an IPv6 host goes in brackets, as in [::1]:9464"},
      {"localhost:9464",
       "listen address \"localhost:9464\": \"localhost\" is not a numeric IPv4 address (host "
       "names are not resolved)"},
      {"[127.0.0.1]:9464",
       "listen address \"[127.0.0.1]:9464\": \"127.0.0.1\" is not a numeric IPv6 address"},
  };

  for (const auto& [listen, message] : cases) {
    auto server = MetricsServer::start(listen);

    ASSERT_FALSE(server) << listen;
    EXPECT_EQ(server.error().code(), EINVAL) << listen;
    EXPECT_EQ(server.error().message(), message);
  }
}

TEST(MetricsServerListenTest, ReportsAPortInUse) {
  auto first = MetricsServer::start("127.0.0.1:0");
  ASSERT_TRUE(first) << first.error().message();
  const std::string listen = "127.0.0.1:" + std::to_string((*first)->port());

  auto second = MetricsServer::start(listen);

  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code(), EADDRINUSE);
  EXPECT_EQ(second.error().message().rfind("start http server on " + listen + ": ", 0), 0u)
      << second.error().message();
  EXPECT_NE(second.error().message().find("Address already in use"), std::string::npos)
      << second.error().message();
}

}  // namespace
}  // namespace mseg::agent
