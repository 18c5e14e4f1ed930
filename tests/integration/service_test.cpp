// microsegd under a service manager. systemd is not PID 1 on the test machines, so each test
// points the agent's NOTIFY_SOCKET at a datagram socket it owns and reads what systemd would
// read for a Type=notify unit with WatchdogSec=: READY=1 once the first policy enforces,
// RELOADING=1 and READY=1 around a reload, WATCHDOG=1 from the agent's tick, STOPPING=1.
#include <stdlib.h>

#include <chrono>
#include <string>

#include <gtest/gtest.h>

#include "support/notify_socket.hpp"
#include "two_hosts.hpp"

namespace mseg::testing {
namespace {

constexpr auto kNotifyTimeout = 20s;

class ServicePrivilegedTest : public TwoHostTest {
protected:
  void SetUp() override {
    TwoHostTest::SetUp();
    if (HasFatalFailure() || IsSkipped()) {
      return;
    }
    auto socket = NotifySocket::create();
    ASSERT_TRUE(socket) << socket.error().message();
    notify_.emplace(std::move(*socket));
  }

  void TearDown() override {
    TwoHostTest::TearDown();
    notify_.reset();
  }

  // Starts the agent with the environment systemd gives a Type=notify unit; 0 means no
  // WatchdogSec=. Only the agent's process sees it.
  Status startUnderServiceManager(std::chrono::microseconds watchdog = {}) {
    setenv("NOTIFY_SOCKET", notify_->path().c_str(), 1);
    if (watchdog.count() > 0) {
      setenv("WATCHDOG_USEC", std::to_string(watchdog.count()).c_str(), 1);
    }
    auto started = agent_->start();
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    return started;
  }

  std::optional<NotifySocket> notify_;
};

TEST_F(ServicePrivilegedTest, ReportsReadyOnceThePolicyEnforces) {
  serveTcp(7001);
  serveTcp(7002);

  ASSERT_TRUE(startUnderServiceManager());
  auto ready = notify_->waitFor("READY=1", kNotifyTimeout);

  ASSERT_TRUE(ready) << ready.error().message();
  EXPECT_NE(notifyField(*ready, "STATUS").find("enforcing policy version 1 "), std::string::npos)
      << *ready;
  EXPECT_EQ(connectFrom(client(), kServer4, 7001), 0);
  EXPECT_EQ(connectFrom(client(), kServer4, 7002), EPERM);
}

TEST_F(ServicePrivilegedTest, PingsTheWatchdogFromItsTick) {
  ASSERT_TRUE(startUnderServiceManager(3s));
  ASSERT_TRUE(notify_->waitFor("READY=1", kNotifyTimeout));
  const auto first_ping_by = std::chrono::steady_clock::now();

  EXPECT_TRUE(notify_->waitFor("WATCHDOG=1", 3s));
  EXPECT_TRUE(notify_->waitFor("WATCHDOG=1", 3s));
  EXPECT_LT(std::chrono::steady_clock::now() - first_ping_by, 4s);
}

TEST_F(ServicePrivilegedTest, SendsNoWatchdogPingsWithoutWatchdogSec) {
  ASSERT_TRUE(startUnderServiceManager());
  ASSERT_TRUE(notify_->waitFor("READY=1", kNotifyTimeout));

  EXPECT_FALSE(notify_->waitFor("WATCHDOG=1", 2500ms));
}

TEST_F(ServicePrivilegedTest, ReportsReloadingThenReadyAroundSighup) {
  ASSERT_TRUE(startUnderServiceManager());
  ASSERT_TRUE(notify_->waitFor("READY=1", kNotifyTimeout));

  agent_->reload();
  auto reloading = notify_->waitFor("RELOADING=1", kNotifyTimeout);
  auto ready = notify_->waitFor("READY=1", kNotifyTimeout);

  ASSERT_TRUE(reloading) << reloading.error().message();
  EXPECT_FALSE(notifyField(*reloading, "MONOTONIC_USEC").empty()) << *reloading;
  ASSERT_TRUE(ready) << ready.error().message();
  EXPECT_NE(notifyField(*ready, "STATUS").find("enforcing policy version 2 "), std::string::npos)
      << *ready;
}

TEST_F(ServicePrivilegedTest, RejectedReloadStaysReadyAndSaysWhy) {
  serveTcp(7001);
  ASSERT_TRUE(startUnderServiceManager());
  ASSERT_TRUE(notify_->waitFor("READY=1", kNotifyTimeout));
  agent_->writePolicy("version: 1\nworkloads: [\n");

  agent_->reload();
  auto ready = notify_->waitFor("READY=1", kNotifyTimeout);

  ASSERT_TRUE(ready) << ready.error().message();
  const std::string status = notifyField(*ready, "STATUS");
  EXPECT_NE(status.find("enforcing policy version 1 "), std::string::npos) << status;
  EXPECT_NE(status.find("last reload rejected: "), std::string::npos) << status;
  EXPECT_EQ(connectFrom(client(), kServer4, 7001), 0);
}

TEST_F(ServicePrivilegedTest, ReportsStoppingAndLeavesThePolicyEnforcing) {
  serveTcp(7002);
  ASSERT_TRUE(startUnderServiceManager());
  ASSERT_TRUE(notify_->waitFor("READY=1", kNotifyTimeout));

  auto exit_status = agent_->stop();
  auto stopping = notify_->waitFor("STOPPING=1", kNotifyTimeout);

  ASSERT_TRUE(exit_status);
  EXPECT_EQ(*exit_status, 0);
  EXPECT_TRUE(stopping) << stopping.error().message();
  EXPECT_EQ(connectFrom(client(), kServer4, 7002), EPERM);
}

TEST_F(ServicePrivilegedTest, FailedStartTellsTheServiceManagerWhy) {
  agent_->writePolicy("version: 1\nworkloads: [\n");
  setenv("NOTIFY_SOCKET", notify_->path().c_str(), 1);
  auto started = agent_->launch();
  unsetenv("NOTIFY_SOCKET");
  ASSERT_TRUE(started);

  auto exit_status = started->wait(20s);
  auto errno_line = notify_->waitFor("ERRNO=" + std::to_string(EINVAL), kNotifyTimeout);

  ASSERT_TRUE(exit_status);
  EXPECT_EQ(*exit_status, 1);
  ASSERT_TRUE(errno_line) << errno_line.error().message();
  EXPECT_EQ(notifyField(*errno_line, "STATUS").rfind("cannot start: policy ", 0), 0u)
      << *errno_line;
  EXPECT_TRUE(notify_->received().size() == 1) << "no READY=1 before the failure";
}

}  // namespace
}  // namespace mseg::testing
