// Upgrading microsegd over a running one whose maps have another layout. The next release's
// agent (built for this test: the same sources with the policy maps at layout version 3) must
// fill a new set of maps, switch the pinned links to its programs with BPF_LINK_UPDATE and only
// then unpin the old maps, while a prober connecting all along sees every verdict unchanged.
// A package upgrade does the same: postinst restarts the service, stop then start.
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include <bpf/bpf.h>
#include <gtest/gtest.h>

#include "two_hosts.hpp"

namespace mseg::testing {
namespace {

namespace fs = std::filesystem;

class UpgradePrivilegedTest : public TwoHostTest {
protected:
  // Connects to the allowed port 7001 and the denied port 7002 from the client, round after
  // round, until stopProber(). Exits 20 when an allowed connection failed, 21 when a denied one
  // passed, 22 when it could not run a single round.
  void startProber() {
    // Close-on-exec: agents started later must not hold the write end open.
    ASSERT_EQ(pipe2(stop_, O_CLOEXEC), 0);
    auto prober = Subprocess::fork(client(), [&] {
      close(stop_[1]);
      int rounds = 0;
      for (pollfd stop{stop_[0], POLLIN, 0}; poll(&stop, 1, 0) == 0; rounds++) {
        if (tcpConnect(kServer4, 7001, kQuick) != 0) {
          return 20;
        }
        if (tcpConnect(kServer4, 7002, kQuick) != EPERM) {
          return 21;
        }
      }
      return rounds > 0 ? 0 : 22;
    });
    ASSERT_TRUE(prober) << prober.error().message();
    close(stop_[0]);
    prober_.emplace(std::move(*prober));
  }

  int stopProber() {
    close(stop_[1]);
    auto status = prober_->wait(30s);
    return status ? *status : -1;
  }

  // Stops the running agent as `systemctl restart` does and starts `binary` in its place.
  void restartAs(const std::string& binary) {
    auto stopped = agent_->stop();
    ASSERT_TRUE(stopped);
    ASSERT_EQ(*stopped, 0);
    agent_->useBinary(binary);
    ASSERT_TRUE(agent_->start()) << "agent failed to start";
  }

  bool pinned(const std::string& name) const {
    return fs::exists(fs::path(agent_->pinDir()) / name);
  }

  int stop_[2] = {-1, -1};
  std::optional<Subprocess> prober_;
};

TEST_F(UpgradePrivilegedTest, NewLayoutTakesOverWithoutGapAndUnpinsTheOldMaps) {
  serveTcp(7001);
  serveTcp(7002);
  startAgent();
  ASSERT_TRUE(pinned("mseg_cfg_v2"));
  startProber();

  restartAs(MSEG_MICROSEGD_NEXT_LAYOUT);

  EXPECT_EQ(stopProber(), 0) << "20: an allowed connection failed, 21: a denied one passed";
  for (const char* name : {"mseg_cfg_v3", "mseg_wl_v3", "mseg_wl_v3_b0", "mseg_peer_v3_b1",
                           "mseg_vrd_v3_b1", "mseg_flow_v1", "link_mseg_connect4"}) {
    EXPECT_TRUE(pinned(name)) << name;
  }
  for (const char* name : {"mseg_cfg_v2", "mseg_wl_v2", "mseg_wl_v2_b0", "mseg_peer_v2_b1",
                           "mseg_vrd_v2", "mseg_vrd_v2_b0"}) {
    EXPECT_FALSE(pinned(name)) << name;
  }
}

// The programs the links run now read the new maps: a policy the new agent applies decides.
TEST_F(UpgradePrivilegedTest, UpgradedAgentAppliesPolicyChanges) {
  serveTcp(7001);
  startAgent();
  restartAs(MSEG_MICROSEGD_NEXT_LAYOUT);
  const uint64_t version = agent_->policyVersion().value_or(0);
  std::string tightened = kPolicy;
  tightened.replace(tightened.find("ports: [7001, 7100-7199]"), 24, "ports: [7100-7199]      ");
  agent_->writePolicy(tightened);

  ASSERT_TRUE(agent_->reloadAndWait(version));

  EXPECT_EQ(connectFrom(client(), kServer4, 7001), EPERM);
}

// Rolling the package back is the same switch in the other direction.
TEST_F(UpgradePrivilegedTest, OlderLayoutTakesBackOverWithoutGap) {
  serveTcp(7001);
  serveTcp(7002);
  agent_->useBinary(MSEG_MICROSEGD_NEXT_LAYOUT);
  startAgent();
  startProber();

  restartAs(MSEG_MICROSEGD);

  EXPECT_EQ(stopProber(), 0) << "20: an allowed connection failed, 21: a denied one passed";
  EXPECT_TRUE(pinned("mseg_cfg_v2"));
  EXPECT_TRUE(pinned("mseg_vrd_v2_b0"));
  EXPECT_FALSE(pinned("mseg_cfg_v3"));
  EXPECT_FALSE(pinned("mseg_vrd_v3_b0"));
}

// A build whose policy maps changed version apart would let one program read two policies.
TEST_F(UpgradePrivilegedTest, HalfVersionedPolicyMapsAreRefusedAndChangeNothing) {
  serveTcp(7001);
  serveTcp(7002);
  startAgent();
  ASSERT_TRUE(agent_->stop());
  // A workload map of the next layout, pinned as if half of a new set already existed.
  const int stray = bpf_map_create(BPF_MAP_TYPE_ARRAY, "mseg_wl_v3", 4, 4, 1, nullptr);
  ASSERT_GE(stray, 0);
  ASSERT_EQ(bpf_obj_pin(stray, (agent_->pinDir() + "/mseg_wl_v3").c_str()), 0);
  close(stray);
  agent_->useBinary(MSEG_MICROSEGD_NEXT_LAYOUT);

  auto started = agent_->launch();
  ASSERT_TRUE(started);
  auto status = started->wait(20s);

  ASSERT_TRUE(status);
  EXPECT_EQ(*status, 1);
  EXPECT_NE(started->err().find("policy maps change version apart"), std::string::npos)
      << started->err();
  EXPECT_FALSE(pinned("mseg_cfg_v3"));
  EXPECT_EQ(connectFrom(client(), kServer4, 7001), 0);
  EXPECT_EQ(connectFrom(client(), kServer4, 7002), EPERM);
}

}  // namespace
}  // namespace mseg::testing
