// The agent's metrics endpoint scraped by a real Prometheus server on loopback: Prometheus must
// parse the text MetricsText writes, escaping included, and give back the same labels and values
// through its query API. Needs no root.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "metrics.hpp"
#include "support/poll.hpp"
#include "support/subprocess.hpp"
#include "support/unique_fd.hpp"

namespace mseg::testing {
namespace {

namespace fs = std::filesystem;
using agent::MetricsServer;
using agent::MetricsText;
using Json = nlohmann::json;
using namespace std::chrono_literals;

constexpr const char* kPrometheus = "/usr/bin/prometheus";
constexpr const char* kJob = "microseg";

// A port that was free on 127.0.0.1 a moment ago. Prometheus cannot tell which port the kernel
// picked for it, so it gets one chosen here (and a retry when another process took it).
Result<uint16_t> pickLoopbackPort() {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) {
    return Error::fromErrno(errno, "socket");
  }
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&address), length) != 0 ||
      getsockname(fd.get(), reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    return Error::fromErrno(errno, "pick a loopback port");
  }
  return ntohs(address.sin_port);
}

// Prometheus in a child process, listening on 127.0.0.1 only, scraping one target every second,
// with its configuration and storage in a directory of the test. Killed when destroyed.
class PrometheusServer {
public:
  // Starts Prometheus and returns once it reports ready, or fails with its stderr when it does
  // not get there within 30 seconds.
  static Result<std::unique_ptr<PrometheusServer>> start(const fs::path& dir,
                                                         uint16_t target_port) {
    {
      std::ofstream config(dir / "prometheus.yml");
      config << "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
             << "scrape_configs:\n  - job_name: " << kJob << "\n    static_configs:\n"
             << "      - targets: ['127.0.0.1:" << target_port << "']\n";
    }

    std::string failures;
    for (int attempt = 0; attempt < 3; attempt++) {
      auto port = pickLoopbackPort();
      if (!port) {
        return port.error();
      }
      auto process =
          Subprocess::start({kPrometheus, "--config.file=" + (dir / "prometheus.yml").string(),
                             "--storage.tsdb.path=" + (dir / "data").string(),
                             "--web.listen-address=127.0.0.1:" + std::to_string(*port)});
      if (!process) {
        return process.error();
      }
      std::unique_ptr<PrometheusServer> server(new PrometheusServer(std::move(*process), *port));
      if (server->awaitReady(30s)) {
        return server;
      }
      failures += server->output();
      if (server->output().find("address already in use") == std::string::npos) {
        break;
      }
    }
    return Error(ETIMEDOUT, "prometheus did not get ready: " + failures);
  }

  uint16_t port() const { return port_; }

  // The "result" array of an instant query, or why there is none.
  Result<Json> query(const std::string& expression) {
    drainOutput();
    auto answer = get("/api/v1/query", expression);
    if (!answer) {
      return answer.error();
    }
    Json parsed = Json::parse(*answer, nullptr, false);
    if (!parsed.is_object() || parsed.value("status", "") != "success") {
      return Error(EBADMSG, "query " + expression + ": " + *answer);
    }
    return parsed["data"]["result"];
  }

  // Why the last scrape of the target failed, as Prometheus' targets page tells it.
  std::string lastScrapeError() {
    auto answer = get("/api/v1/targets", "");
    if (!answer) {
      return answer.error().message();
    }
    Json parsed = Json::parse(*answer, nullptr, false);
    if (!parsed.is_object() || parsed["data"]["activeTargets"].empty()) {
      return "no target: " + *answer;
    }
    return parsed["data"]["activeTargets"][0].value("lastError", "");
  }

  // What Prometheus wrote to stdout and stderr so far.
  std::string output() {
    drainOutput();
    return process_.out() + process_.err();
  }

private:
  PrometheusServer(Subprocess process, uint16_t port) : process_(std::move(process)), port_(port) {}

  bool awaitReady(std::chrono::milliseconds timeout) {
    auto ready_or_exited = [&] {
      drainOutput();
      return !process_.running() || get("/-/ready", "").ok();
    };
    return pollUntil(timeout, ready_or_exited, 100ms) && process_.running();
  }

  // Also keeps the pipes from filling up and stopping Prometheus.
  void drainOutput() { (void)process_.wait(0ms); }

  // GET on Prometheus' loopback port with curl, the query (if any) URL-encoded by curl.
  Result<std::string> get(const std::string& path, const std::string& query) {
    // -sSf: no progress meter, but errors, and a failure status for an HTTP error. No proxy
    // from the environment may take loopback requests elsewhere.
    std::vector<std::string> argv = {"curl", "-sSf", "--noproxy", "*", "--max-time", "5"};
    if (!query.empty()) {
      argv.insert(argv.end(), {"--get", "--data-urlencode", "query=" + query});
    }
    argv.push_back("http://127.0.0.1:" + std::to_string(port_) + path);
    auto result = runCommand(argv, 10s);
    if (!result) {
      return result.error();
    }
    if (result->status != 0) {
      return Error(EIO, "curl " + path + ": " + result->err);
    }
    return result->out;
  }

  Subprocess process_;
  uint16_t port_;
};

class MetricsPrometheusTest : public ::testing::Test {
protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(kPrometheus))
        << kPrometheus << " is missing: scripts/install-deps.sh installs Debian's prometheus";
    const std::string test = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    dir_ =
        fs::temp_directory_path() / ("mseg-metrics-test-" + std::to_string(getpid()) + "-" + test);
    fs::remove_all(dir_);
    fs::create_directories(dir_);

    auto server = MetricsServer::start("127.0.0.1:0");
    ASSERT_TRUE(server) << server.error().message();
    server_ = std::move(*server);
  }

  void TearDown() override {
    // Prometheus first: it writes into dir_ until it is killed.
    prometheus_.reset();
    server_.reset();
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  void startPrometheus() {
    auto prometheus = PrometheusServer::start(dir_, server_->port());
    ASSERT_TRUE(prometheus) << prometheus.error().message();
    prometheus_ = std::move(*prometheus);
  }

  // Polls a query until `found` accepts its result, for at most 30 seconds (Prometheus scrapes
  // every second). Returns the last result.
  template <typename Predicate>
  Json awaitQuery(const std::string& expression, Predicate&& found) {
    Json result = Json::array();
    auto answered = [&] {
      if (auto answer = prometheus_->query(expression)) {
        result = *answer;
      }
      return found(result);
    };
    pollUntil(30s, answered, 200ms);
    return result;
  }

  static std::string labelOf(const Json& result, const std::string& label) {
    return result.size() == 1 ? result[0]["metric"].value(label, "") : "";
  }
  static std::string valueOf(const Json& result) {
    return result.size() == 1 ? result[0]["value"][1].get<std::string>() : "";
  }

  fs::path dir_;
  std::unique_ptr<MetricsServer> server_;
  std::unique_ptr<PrometheusServer> prometheus_;
};

TEST_F(MetricsPrometheusTest, PrometheusReadsBackLabelsAndValuesAsPublished) {
  // Every character the label value escaping handles, and UTF-8 beyond ASCII.
  const std::string rule = "web \"frontend\" C:\\srv\nline two \xC3\xA9";
  MetricsText text;
  text.counter("mseg_test_rule_hits_total", "Hits per rule; help with a \\ and a\nnewline.");
  text.sample("mseg_test_rule_hits_total", {{"rule", rule}, {"verdict", "deny"}}, 1234567890123);
  text.gauge("mseg_test_apply_seconds", "A fraction.");
  text.sample("mseg_test_apply_seconds", {}, 0.25);
  server_->publish(text.text());

  startPrometheus();
  // `up` appears with the first scrape, 1 when Prometheus could parse the text.
  auto up =
      awaitQuery(std::string("up{job=\"") + kJob + "\"}", [](const Json& r) { return !r.empty(); });
  ASSERT_EQ(valueOf(up), "1") << up.dump() << " " << prometheus_->lastScrapeError();
  auto hits = awaitQuery("mseg_test_rule_hits_total", [](const Json& r) { return !r.empty(); });
  auto seconds = awaitQuery("mseg_test_apply_seconds", [](const Json& r) { return !r.empty(); });

  EXPECT_EQ(labelOf(up, "instance"), "127.0.0.1:" + std::to_string(server_->port()));
  ASSERT_EQ(hits.size(), 1u) << hits.dump() << "\n" << prometheus_->output();
  EXPECT_EQ(labelOf(hits, "rule"), rule);
  EXPECT_EQ(labelOf(hits, "verdict"), "deny");
  EXPECT_EQ(valueOf(hits), "1234567890123");
  EXPECT_EQ(valueOf(seconds), "0.25");
}

TEST_F(MetricsPrometheusTest, PrometheusSeesTheNextPublishedValue) {
  MetricsText first;
  first.gauge("mseg_test_workloads", "Workloads.");
  first.sample("mseg_test_workloads", {}, 1);
  server_->publish(first.text());
  startPrometheus();
  auto before = awaitQuery("mseg_test_workloads", [](const Json& r) { return valueOf(r) == "1"; });
  ASSERT_EQ(valueOf(before), "1") << before.dump() << "\n" << prometheus_->output();

  MetricsText second;
  second.gauge("mseg_test_workloads", "Workloads.");
  second.sample("mseg_test_workloads", {}, 2);
  server_->publish(second.text());
  auto after = awaitQuery("mseg_test_workloads", [](const Json& r) { return valueOf(r) == "2"; });

  EXPECT_EQ(valueOf(after), "2") << after.dump() << "\n" << prometheus_->output();
}

}  // namespace
}  // namespace mseg::testing
