// Proves the test support library on the real kernel: traffic across a veth between two of our
// namespaces, placement of processes in a test cgroup, and cleanup that leaves nothing behind.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>

#include "support/cgroup.hpp"
#include "support/netns.hpp"
#include "support/poll.hpp"
#include "support/privileged.hpp"
#include "support/sockets.hpp"
#include "support/subprocess.hpp"

namespace mseg::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// vethSubnet(7): the client end is .1 / ::1, the server end .2 / ::2.
constexpr int kSubnet = 7;
constexpr const char* kServerV4 = "198.18.7.2";
constexpr const char* kServerV6 = "fd00:7::2";

std::string errnoName(int err) { return err == 0 ? "success" : std::strerror(err); }

bool contains(const std::vector<pid_t>& pids, pid_t pid) {
  return std::find(pids.begin(), pids.end(), pid) != pids.end();
}

std::string readFile(const fs::path& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Gone, or a zombie that its new parent has not reaped yet: either way no longer running.
bool processEnded(pid_t pid) {
  std::string stat = readFile("/proc/" + std::to_string(pid) + "/stat");
  auto state = stat.rfind(')');
  return stat.empty() || (state != std::string::npos && stat.substr(state + 2, 1) == "Z");
}

class TestSupportPrivilegedTest : public ::testing::Test {
protected:
  void SetUp() override {
    MSEG_REQUIRE_PRIVILEGES();

    auto cgroup = TestCgroup::create();
    ASSERT_TRUE(cgroup.ok()) << cgroup.error().message();
    cgroup_.emplace(std::move(cgroup).value());
    for (const char* child : {"client", "server"}) {
      auto created = cgroup_->createChild(child);
      ASSERT_TRUE(created.ok()) << created.error().message();
    }

    auto client = NetNamespace::create();
    ASSERT_TRUE(client.ok()) << client.error().message();
    client_.emplace(std::move(client).value());
    auto server = NetNamespace::create();
    ASSERT_TRUE(server.ok()) << server.error().message();
    server_.emplace(std::move(server).value());

    auto [client_end, server_end] = vethSubnet(kSubnet);
    auto link = VethPair::create(*client_, client_end, *server_, server_end);
    ASSERT_TRUE(link.ok()) << link.error().message();
    link_.emplace(std::move(link).value());
  }

  Placement client() const { return {client_->path(), cgroup_->path("client")}; }
  Placement server() const { return {server_->path(), cgroup_->path("server")}; }

  // Destroyed in reverse: the link, the namespaces, then the cgroup and what runs in it.
  std::optional<TestCgroup> cgroup_;
  std::optional<NetNamespace> client_;
  std::optional<NetNamespace> server_;
  std::optional<VethPair> link_;
};

TEST_F(TestSupportPrivilegedTest, TcpEchoCrossesVethOverIpv4AndIpv6) {
  auto echo = TcpEchoServer::start(server());
  ASSERT_TRUE(echo.ok()) << echo.error().message();

  auto v4 = runIn(client(), [&] { return tcpSendRecv(kServerV4, echo->port(), "over ipv4", 2s); });
  auto v6 = runIn(client(), [&] { return tcpSendRecv(kServerV6, echo->port(), "over ipv6", 2s); });

  ASSERT_TRUE(v4.ok()) << v4.error().message();
  EXPECT_EQ(*v4, 0) << errnoName(*v4);
  ASSERT_TRUE(v6.ok()) << v6.error().message();
  EXPECT_EQ(*v6, 0) << errnoName(*v6);
}

TEST_F(TestSupportPrivilegedTest, UdpRoundTripCrossesVethOverIpv4AndIpv6) {
  auto echo = UdpEchoServer::start(server());
  ASSERT_TRUE(echo.ok()) << echo.error().message();

  auto v4 = runIn(client(), [&] { return udpSendRecv(kServerV4, echo->port(), "dgram v4", 2s); });
  auto v6 = runIn(client(), [&] { return udpSendRecv(kServerV6, echo->port(), "dgram v6", 2s); });

  ASSERT_TRUE(v4.ok()) << v4.error().message();
  EXPECT_EQ(*v4, 0) << errnoName(*v4);
  ASSERT_TRUE(v6.ok()) << v6.error().message();
  EXPECT_EQ(*v6, 0) << errnoName(*v6);
}

TEST_F(TestSupportPrivilegedTest, PingReachesPeerOverIpv4AndIpv6) {
  auto v4 = runIn(client(), [] { return pingOnce(kServerV4, 2s); });
  auto v6 = runIn(client(), [] { return pingOnce(kServerV6, 2s); });

  ASSERT_TRUE(v4.ok()) << v4.error().message();
  EXPECT_EQ(*v4, 0) << errnoName(*v4);
  ASSERT_TRUE(v6.ok()) << v6.error().message();
  EXPECT_EQ(*v6, 0) << errnoName(*v6);
}

TEST_F(TestSupportPrivilegedTest, PingTimesOutWhenNoHostAnswers) {
  auto v4 = runIn(client(), [] { return pingOnce("198.18.7.3", 300ms); });
  auto v6 = runIn(client(), [] { return pingOnce("fd00:7::3", 300ms); });

  ASSERT_TRUE(v4.ok()) << v4.error().message();
  EXPECT_EQ(*v4, ETIMEDOUT) << errnoName(*v4);
  ASSERT_TRUE(v6.ok()) << v6.error().message();
  EXPECT_EQ(*v6, ETIMEDOUT) << errnoName(*v6);
}

TEST_F(TestSupportPrivilegedTest, ClientsReportClosedPortsAsRefused) {
  auto echo = TcpEchoServer::start(server());
  ASSERT_TRUE(echo.ok()) << echo.error().message();
  uint16_t closed_port = echo->port() == 9 ? 10 : 9;

  auto tcp = runIn(client(), [&] { return tcpConnect(kServerV4, closed_port, 2s); });
  auto udp = runIn(client(), [&] { return udpSendRecv(kServerV6, closed_port, "x", 2s); });

  ASSERT_TRUE(tcp.ok()) << tcp.error().message();
  EXPECT_EQ(*tcp, ECONNREFUSED) << errnoName(*tcp);
  ASSERT_TRUE(udp.ok()) << udp.error().message();
  EXPECT_EQ(*udp, ECONNREFUSED) << errnoName(*udp);
}

TEST_F(TestSupportPrivilegedTest, SubprocessLandsInItsCgroupAndNamespace) {
  auto sleeper = Subprocess::start({"sleep", "60"}, client());
  ASSERT_TRUE(sleeper.ok()) << sleeper.error().message();
  struct stat netns_file {};
  struct stat sleeper_netns {};

  auto members = cgroup_->processes("client");
  std::string proc_cgroup = readFile("/proc/" + std::to_string(sleeper->pid()) + "/cgroup");
  ASSERT_EQ(stat(client_->path().c_str(), &netns_file), 0);
  std::string proc_netns = "/proc/" + std::to_string(sleeper->pid()) + "/ns/net";
  ASSERT_EQ(stat(proc_netns.c_str(), &sleeper_netns), 0);

  ASSERT_TRUE(members.ok()) << members.error().message();
  EXPECT_TRUE(contains(*members, sleeper->pid()));
  EXPECT_NE(proc_cgroup.find("0::" + cgroup_->pathInHierarchy("client") + "\n"), std::string::npos)
      << proc_cgroup;
  EXPECT_EQ(sleeper_netns.st_ino, netns_file.st_ino);
}

TEST_F(TestSupportPrivilegedTest, CommandSeesOnlyItsNamespacesAddresses) {
  auto shown = runCommand({"ip", "-br", "addr", "show"}, 5s, client());

  ASSERT_TRUE(shown.ok()) << shown.error().message();
  EXPECT_EQ(shown->status, 0) << shown->err;
  EXPECT_NE(shown->out.find("198.18.7.1/24"), std::string::npos) << shown->out;
  EXPECT_NE(shown->out.find("fd00:7::1/64"), std::string::npos) << shown->out;
  EXPECT_EQ(shown->out.find("198.18.7.2"), std::string::npos) << shown->out;
}

TEST_F(TestSupportPrivilegedTest, CgroupIdIsTheDirectoryInode) {
  struct stat dir {};

  auto id = cgroup_->id("client");

  ASSERT_TRUE(id.ok()) << id.error().message();
  ASSERT_EQ(stat(cgroup_->path("client").c_str(), &dir), 0);
  EXPECT_EQ(*id, dir.st_ino);
}

TEST_F(TestSupportPrivilegedTest, WaitTimesOutWhileRunningAndKillEndsProcess) {
  auto sleeper = Subprocess::start({"sleep", "60"}, client());
  ASSERT_TRUE(sleeper.ok()) << sleeper.error().message();
  pid_t pid = sleeper->pid();

  auto early = sleeper->wait(50ms);
  sleeper->kill();
  auto after = sleeper->wait(0ms);

  ASSERT_FALSE(early.ok());
  EXPECT_EQ(early.error().code(), ETIMEDOUT);
  ASSERT_TRUE(after.ok()) << after.error().message();
  EXPECT_EQ(*after, 128 + SIGKILL);
  EXPECT_FALSE(sleeper->running());
  EXPECT_TRUE(processEnded(pid));
}

TEST_F(TestSupportPrivilegedTest, StartNamesTheStepThatFailed) {
  auto missing = Subprocess::start({"/nonexistent/mseg-binary"}, client());
  auto bad_cgroup = Subprocess::start({"true"}, Placement{{}, cgroup_->path("no-such-child")});

  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), ENOENT);
  EXPECT_NE(missing.error().message().find(": exec: "), std::string::npos)
      << missing.error().message();
  ASSERT_FALSE(bad_cgroup.ok());
  EXPECT_NE(bad_cgroup.error().message().find(": join cgroup: "), std::string::npos)
      << bad_cgroup.error().message();
}

TEST_F(TestSupportPrivilegedTest, RejectsAddressesOutsideTestRanges) {
  VethEnd outside{"vethx", "10.0.0.1/24", ""};
  VethEnd inside{"vethx", "198.18.9.2/24", ""};

  auto pair = VethPair::create(*client_, outside, *server_, inside);

  ASSERT_FALSE(pair.ok());
  EXPECT_EQ(pair.error().code(), EINVAL);
  EXPECT_TRUE(isTestAddress("198.19.255.1/24"));
  EXPECT_TRUE(isTestAddress("fd00:6d73::10/64"));
  EXPECT_FALSE(isTestAddress("198.20.0.1/24"));
  EXPECT_FALSE(isTestAddress("fe80::1/64"));
  EXPECT_FALSE(isTestAddress("198.18.0.1"));
}

TEST(TestSupportCleanupPrivilegedTest, LeavesNoNamespacesCgroupsOrProcesses) {
  MSEG_REQUIRE_PRIVILEGES();
  fs::path cgroup_path;
  pid_t orphan = -1;

  {
    auto cgroup = TestCgroup::create();
    ASSERT_TRUE(cgroup.ok()) << cgroup.error().message();
    auto nested = cgroup->createChild("system.slice/orphan.service");
    ASSERT_TRUE(nested.ok()) << nested.error().message();
    auto a = NetNamespace::create();
    ASSERT_TRUE(a.ok()) << a.error().message();
    auto b = NetNamespace::create();
    ASSERT_TRUE(b.ok()) << b.error().message();
    auto [a_end, b_end] = vethSubnet(8);
    auto link = VethPair::create(*a, a_end, *b, b_end);
    ASSERT_TRUE(link.ok()) << link.error().message();
    cgroup_path = cgroup->path();

    // The shell exits at once; its sleep outlives it, owned by no Subprocess, so only the
    // cgroup's destructor can end it.
    auto spawned = runCommand({"sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"}, 5s,
                              Placement{a->path(), *nested});
    ASSERT_TRUE(spawned.ok()) << spawned.error().message();
    orphan = std::stoi(spawned->out);
    auto members = cgroup->processes("system.slice/orphan.service");
    ASSERT_TRUE(members.ok()) << members.error().message();
    ASSERT_TRUE(contains(*members, orphan));
  }

  auto namespaces = runCommand({"ip", "netns", "list"});
  ASSERT_TRUE(namespaces.ok()) << namespaces.error().message();
  EXPECT_EQ(namespaces->out.find(ownedNamePrefix()), std::string::npos) << namespaces->out;
  EXPECT_FALSE(fs::exists(cgroup_path)) << cgroup_path;
  std::error_code err;
  for (const auto& entry : fs::directory_iterator(cgroup_path.parent_path(), err)) {
    EXPECT_NE(entry.path().filename().string().rfind(ownedNamePrefix(), 0), 0u) << entry.path();
  }
  EXPECT_TRUE(pollUntil(5s, [&] { return processEnded(orphan); })) << "pid " << orphan;
}

}  // namespace
}  // namespace mseg::testing
