// A client and a server host in their own network namespaces joined by veth, each in its own
// cgroup under a test cgroup that a real microsegd attaches to, with a policy between them.
// Shared by the integration suites; every test gets a fresh copy of all of it.
#pragma once

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "agent_harness.hpp"
#include "support/cgroup.hpp"
#include "support/netns.hpp"
#include "support/poll.hpp"
#include "support/privileged.hpp"
#include "support/sockets.hpp"
#include "support/subprocess.hpp"

namespace mseg::testing {

using namespace std::chrono_literals;

inline constexpr int kSubnet = 61;
inline constexpr const char* kClient4 = "198.18.61.1";
inline constexpr const char* kServer4 = "198.18.61.2";
inline constexpr const char* kServer6 = "fd00:61::2";
// A second server address that no inventory entry covers.
inline constexpr const char* kUnlisted4 = "198.18.61.9";
inline constexpr const char* kUnlisted6 = "fd00:61::9";
inline constexpr auto kQuick = 1500ms;

inline constexpr const char* kPolicy = R"(version: 1
workloads:
  - name: client
    cgroup: client.service
    labels: {role: client}
  - name: batch
    cgroup: "batch-*.service"
    labels: {role: client}
  - name: server
    cgroup: server.service
    labels: {role: server}
inventory:
  - name: server-host
    cidrs: [198.18.61.2/32, "fd00:61::2/128"]
    labels: {role: server}
  - name: client-host
    cidrs: [198.18.61.1/32, "fd00:61::1/128"]
    labels: {role: client}
segments:
  - name: app
    rules:
      - name: client-to-server-tcp
        from: {role: client}
        to: {role: server}
        protocol: tcp
        ports: [7001, 7100-7199]
      - name: client-to-server-udp
        from: {role: client}
        to: {role: server}
        protocol: udp
        ports: [7001]
      - name: client-ping-server
        from: {role: client}
        to: {role: server}
        protocol: icmp
        icmp-types: [8]
      - name: client-ping6-server
        from: {role: client}
        to: {role: server}
        protocol: icmpv6
        icmp-types: [128]
      - name: server-callback
        from: {role: server}
        to: {role: client}
        protocol: tcp
        ports: [9999]
      - name: no-client-admin
        action: deny
        from: {role: client}
        to: {role: server}
        protocol: tcp
        ports: [7150]
  - name: watch
    mode: audit
    rules:
      - name: client-debug
        action: deny
        from: {role: client}
        to: {role: server}
        protocol: tcp
        ports: [7160]
)";

class TwoHostTest : public ::testing::Test {
protected:
  void SetUp() override {
    MSEG_REQUIRE_PRIVILEGES();
    auto cgroup = TestCgroup::create();
    ASSERT_TRUE(cgroup) << cgroup.error().message();
    cgroup_.emplace(std::move(*cgroup));
    for (const char* child : {"client.service/worker", "server.service", "other.scope"}) {
      auto created = cgroup_->createChild(child);
      ASSERT_TRUE(created) << created.error().message();
    }
    auto client_ns = NetNamespace::create();
    auto server_ns = NetNamespace::create();
    ASSERT_TRUE(client_ns && server_ns);
    client_ns_.emplace(std::move(*client_ns));
    server_ns_.emplace(std::move(*server_ns));
    auto [client_end, server_end] = vethSubnet(kSubnet);
    auto veth = VethPair::create(*client_ns_, client_end, *server_ns_, server_end);
    ASSERT_TRUE(veth) << veth.error().message();
    veth_.emplace(std::move(*veth));
    ASSERT_TRUE(server_ns_->ip({"addr", "add", std::string(kUnlisted4) + "/24", "dev",
                                server_end.name}));
    ASSERT_TRUE(server_ns_->ip({"addr", "add", std::string(kUnlisted6) + "/64", "dev",
                                server_end.name, "nodad"}));

    agent_.emplace(cgroup_->path());
    agent_->writePolicy(kPolicy);
  }

  void TearDown() override {
    servers_tcp_.clear();
    servers_udp_.clear();
    agent_.reset();
    veth_.reset();
    client_ns_.reset();
    server_ns_.reset();
    cgroup_.reset();
  }

  Placement client(const char* cgroup = "client.service") const {
    return {client_ns_->path(), cgroup_->path(cgroup)};
  }
  Placement server() const { return {server_ns_->path(), cgroup_->path("server.service")}; }

  void serveTcp(uint16_t port) {
    auto started = TcpEchoServer::start(server(), "::", port);
    ASSERT_TRUE(started) << started.error().message();
    servers_tcp_.push_back(std::move(*started));
  }
  void serveUdp(uint16_t port) {
    auto started = UdpEchoServer::start(server(), "::", port);
    ASSERT_TRUE(started) << started.error().message();
    servers_udp_.push_back(std::move(*started));
  }

  // What connect() from `where` to address:port returns: 0 or an errno.
  int connectFrom(const Placement& where, std::string address, uint16_t port) {
    auto status = runIn(where, [&] { return tcpConnect(address, port, kQuick); });
    EXPECT_TRUE(status);
    return status ? *status : -1;
  }

  void startAgent() { ASSERT_TRUE(agent_->start()) << "agent failed to start"; }

  // kPolicy as a policy directory in the agent's work directory, which becomes its policy
  // path: 10-identities.yaml (workloads and inventory), 20-app.yaml and 30-watch.yaml (a
  // segment each). Returns the directory.
  std::filesystem::path usePolicyDirectory() {
    const std::string policy = kPolicy;
    const size_t segments = policy.find("segments:\n");
    const size_t watch = policy.find("  - name: watch\n");
    const std::filesystem::path dir = agent_->workDir() / "policy.d";
    std::filesystem::create_directory(dir);
    std::ofstream(dir / "10-identities.yaml") << policy.substr(0, segments);
    std::ofstream(dir / "20-app.yaml")
        << "version: 1\n" << policy.substr(segments, watch - segments);
    std::ofstream(dir / "30-watch.yaml") << "version: 1\nsegments:\n" << policy.substr(watch);
    agent_->setPolicyPath(dir);
    return dir;
  }

  // Writes `text` beside `path` and renames it over, as configuration management does.
  static void replaceFile(const std::filesystem::path& path, const std::string& text) {
    const std::filesystem::path staged = path.string() + ".new";
    std::ofstream(staged) << text;
    std::filesystem::rename(staged, path);
  }

  std::optional<TestCgroup> cgroup_;
  std::optional<NetNamespace> client_ns_;
  std::optional<NetNamespace> server_ns_;
  std::optional<VethPair> veth_;
  std::optional<AgentHarness> agent_;
  std::vector<TcpEchoServer> servers_tcp_;
  std::vector<UdpEchoServer> servers_udp_;
};

}  // namespace mseg::testing
