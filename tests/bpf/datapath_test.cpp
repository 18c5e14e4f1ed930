// The cgroup_skb programs judged packet by packet through BPF_PROG_TEST_RUN: a table of real
// frames against a compiled policy, checking the verdict and the counters the kernel keeps.
//
// Nothing is attached anywhere. BPF_PROG_TEST_RUN gives each packet a scratch socket in the
// root cgroup, with no type and no protocol, so the egress program judges every packet as a
// raw socket's and the test binds the workload under test to the root cgroup's id.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "datapath.hpp"
#include "kernel_state.hpp"
#include "mounts.hpp"
#include "mseg/policy/compiler.hpp"

namespace mseg::agent {
namespace {

constexpr uint64_t kRootCgroupId = 1;

constexpr const char* kPolicy = R"(version: 1
workloads:
  - name: app
    cgroup: test.service
    labels: {tier: app}
inventory:
  - name: db
    cidrs: [198.18.5.10/32, "fd00:5::10/128"]
    labels: {tier: db}
  - name: risky
    cidrs: [198.18.6.0/24]
    labels: {zone: risky}
segments:
  - name: main
    rules:
      - name: app-to-db
        from: {tier: app}
        to: {tier: db}
        protocol: udp
        ports: [5432, 6000-6099]
      - name: app-ping-db
        from: {tier: app}
        to: {tier: db}
        protocol: icmp
        icmp-types: [8]
      - name: app-to-risky
        from: {tier: app}
        to: {zone: risky}
        protocol: any
      - name: risky-to-app-api
        from: {zone: risky}
        to: {tier: app}
        protocol: tcp
        ports: [8080]
      - name: no-risky-admin
        action: deny
        from: {tier: app}
        to: {zone: risky}
        protocol: udp
        ports: [22]
  - name: watch
    mode: audit
    rules:
      - name: no-db-debug
        action: deny
        from: {tier: app}
        to: {tier: db}
        protocol: udp
        ports: [6066]
)";

// A frame as BPF_PROG_TEST_RUN takes it: Ethernet, then IPv4 or IPv6, then the L4 header.
class Frame {
public:
  static Frame udp4(const char* src, const char* dst, uint16_t sport, uint16_t dport) {
    Frame frame(0x0800);
    frame.ipv4(src, dst, IPPROTO_UDP);
    frame.ports(sport, dport);
    frame.put16(8);  // UDP length
    frame.put16(0);  // checksum
    return frame;
  }
  static Frame udp6(const char* src, const char* dst, uint16_t sport, uint16_t dport) {
    Frame frame(0x86DD);
    frame.ipv6(src, dst, IPPROTO_UDP);
    frame.ports(sport, dport);
    frame.put16(8);
    frame.put16(0);
    return frame;
  }
  static Frame icmpEcho4(const char* src, const char* dst, uint8_t type, uint16_t id) {
    Frame frame(0x0800);
    frame.ipv4(src, dst, IPPROTO_ICMP);
    frame.bytes_.push_back(type);
    frame.bytes_.push_back(0);  // code
    frame.put16(0);             // checksum
    frame.put16(id);
    frame.put16(1);  // sequence
    return frame;
  }
  static Frame gre4(const char* src, const char* dst) {
    Frame frame(0x0800);
    frame.ipv4(src, dst, 47);
    frame.put16(0);
    frame.put16(0x0800);
    return frame;
  }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

private:
  explicit Frame(uint16_t ether_type) {
    bytes_.assign(12, 0);
    put16(ether_type);
  }
  void put16(uint16_t value) {
    bytes_.push_back(value >> 8);
    bytes_.push_back(value & 0xff);
  }
  void ports(uint16_t sport, uint16_t dport) {
    put16(sport);
    put16(dport);
  }
  void ipv4(const char* src, const char* dst, uint8_t protocol) {
    uint8_t header[20] = {0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, protocol};
    inet_pton(AF_INET, src, header + 12);
    inet_pton(AF_INET, dst, header + 16);
    bytes_.insert(bytes_.end(), header, header + sizeof(header));
  }
  void ipv6(const char* src, const char* dst, uint8_t next_header) {
    uint8_t header[40] = {0x60, 0, 0, 0, 0, 8, next_header, 64};
    inet_pton(AF_INET6, src, header + 8);
    inet_pton(AF_INET6, dst, header + 24);
    bytes_.insert(bytes_.end(), header, header + sizeof(header));
  }
  std::vector<uint8_t> bytes_;
};

class DatapathPrivilegedTest : public ::testing::Test {
protected:
  void SetUp() override {
    if (geteuid() != 0) {
      if (std::getenv("CI") != nullptr) {
        FAIL() << "the bpf suite needs root, and CI runs as root";
      }
      GTEST_SKIP() << "needs root to load BPF programs";
    }
    pin_dir_ = "/sys/fs/bpf/mseg-test-datapath-" + std::to_string(getpid());
    auto datapath = Datapath::open({"", pin_dir_});
    ASSERT_TRUE(datapath) << datapath.error().message();
    datapath_ = std::move(*datapath);
    applyPolicy(kPolicy);
  }

  void TearDown() override {
    datapath_.reset();
    if (!pin_dir_.empty()) {
      EXPECT_TRUE(uninstallDatapath(pin_dir_));
    }
  }

  void applyPolicy(const char* text) {
    policy::Diagnostics diagnostics;
    auto compiled = policy::loadPolicyText(text, "test.yaml", diagnostics);
    ASSERT_TRUE(compiled) << diagnostics.format();
    compiled_ = *compiled;
    auto bindings = bindWorkloads(compiled_, {{"test.service", kRootCgroupId}});
    rule_ids_ = ids_.assign(compiled_);
    std::map<uint32_t, RuleName> names;
    for (const auto& rule : compiled_.rules) {
      names[rule_ids_[rule.index]] = {rule.name, static_cast<uint8_t>(rule.verdict)};
    }
    auto applied = datapath_->apply(buildBank(compiled_, bindings, rule_ids_), names, ++version_);
    ASSERT_TRUE(applied) << applied.error().message();
  }

  // Runs one frame through a program and returns its verdict: 1 passes, 0 drops.
  int run(const char* program, const Frame& frame) {
    auto fd = datapath_->programFd(program);
    EXPECT_TRUE(fd);
    std::vector<uint8_t> data = frame.bytes();
    LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = data.data(),
                .data_size_in = static_cast<uint32_t>(data.size()), .repeat = 1);
    int err = bpf_prog_test_run_opts(*fd, &opts);
    EXPECT_EQ(err, 0) << "BPF_PROG_TEST_RUN failed: " << std::strerror(-err);
    return static_cast<int>(opts.retval);
  }

  uint64_t hitsOf(const std::string& rule_name) {
    uint32_t id = MSEG_RULE_NONE;
    for (const auto& rule : compiled_.rules) {
      if (rule.name == rule_name) {
        id = rule_ids_[rule.index];
      }
    }
    if (rule_name == "(default deny)") {
      id = MSEG_RULE_DEFAULT_DENY;
    }
    auto hits = datapath_->ruleHits();
    EXPECT_TRUE(hits);
    auto found = hits->find(id);
    return found == hits->end() ? 0 : found->second;
  }

  uint64_t reasonCount(mseg_reason reason) {
    auto counts = datapath_->reasonCounts();
    EXPECT_TRUE(counts);
    return (*counts)[reason];
  }

  std::string pin_dir_;
  std::unique_ptr<Datapath> datapath_;
  policy::CompiledPolicy compiled_;
  RuleIds ids_;
  std::vector<uint32_t> rule_ids_;
  uint64_t version_ = 0;
};

constexpr const char* kEgress = "mseg_egress";
constexpr const char* kIngress = "mseg_ingress";
constexpr const char* kSelf = "198.18.5.1";

TEST_F(DatapathPrivilegedTest, AllowsUdpToListedPortAndCountsTheRule) {
  EXPECT_EQ(run(kEgress, Frame::udp4(kSelf, "198.18.5.10", 40000, 5432)), 1);

  EXPECT_EQ(hitsOf("main/app-to-db"), 1u);
}

TEST_F(DatapathPrivilegedTest, AllowsUdpInsidePortRange) {
  EXPECT_EQ(run(kEgress, Frame::udp4(kSelf, "198.18.5.10", 40000, 6000)), 1);
  EXPECT_EQ(run(kEgress, Frame::udp4(kSelf, "198.18.5.10", 40001, 6099)), 1);
  EXPECT_EQ(run(kEgress, Frame::udp4(kSelf, "198.18.5.10", 40002, 6100)), 0);
}

TEST_F(DatapathPrivilegedTest, DeniesUnlistedPortByDefault) {
  EXPECT_EQ(run(kEgress, Frame::udp4(kSelf, "198.18.5.10", 40000, 5433)), 0);

  EXPECT_EQ(hitsOf("(default deny)"), 1u);
  EXPECT_EQ(reasonCount(MSEG_REASON_POLICY_DENY), 1u);
}

TEST_F(DatapathPrivilegedTest, DeniesPeerOutsideInventory) {
  EXPECT_EQ(run(kEgress, Frame::udp4(kSelf, "198.18.9.9", 40000, 5432)), 0);
}

TEST_F(DatapathPrivilegedTest, JudgesIpv6PeersByTheSameInventory) {
  EXPECT_EQ(run(kEgress, Frame::udp6("fd00:5::1", "fd00:5::10", 40000, 5432)), 1);
  EXPECT_EQ(run(kEgress, Frame::udp6("fd00:5::1", "fd00:5::11", 40000, 5432)), 0);
}

TEST_F(DatapathPrivilegedTest, DenyRuleBeatsBroaderAllow) {
  EXPECT_EQ(run(kEgress, Frame::udp4(kSelf, "198.18.6.7", 40000, 53)), 1);

  EXPECT_EQ(run(kEgress, Frame::udp4(kSelf, "198.18.6.7", 40001, 22)), 0);

  EXPECT_EQ(hitsOf("main/no-risky-admin"), 1u);
}

TEST_F(DatapathPrivilegedTest, AuditDenyPassesAndCountsWouldDeny) {
  EXPECT_EQ(run(kEgress, Frame::udp4(kSelf, "198.18.5.10", 40000, 6066)), 1);

  EXPECT_EQ(hitsOf("watch/no-db-debug"), 1u);
  EXPECT_EQ(reasonCount(MSEG_REASON_POLICY_AUDIT), 1u);
}

TEST_F(DatapathPrivilegedTest, JudgesIcmpByType) {
  EXPECT_EQ(run(kEgress, Frame::icmpEcho4(kSelf, "198.18.5.10", 8, 77)), 1);

  EXPECT_EQ(run(kEgress, Frame::icmpEcho4(kSelf, "198.18.9.9", 8, 78)), 0);
}

TEST_F(DatapathPrivilegedTest, JudgesOtherProtocolsByProtocolAnyRules) {
  EXPECT_EQ(run(kEgress, Frame::gre4(kSelf, "198.18.6.7")), 1);

  EXPECT_EQ(run(kEgress, Frame::gre4(kSelf, "198.18.5.10")), 0);
}

// The workload is managed on ingress (risky-to-app-api selects it), so unsolicited datagrams
// from the database are denied while replies to its own datagrams pass.
TEST_F(DatapathPrivilegedTest, AdmitsReplyOfAnAllowedFlowOnly) {
  ASSERT_EQ(run(kEgress, Frame::udp4(kSelf, "198.18.5.10", 40000, 5432)), 1);

  EXPECT_EQ(run(kIngress, Frame::udp4("198.18.5.10", kSelf, 5432, 40000)), 1);
  EXPECT_EQ(reasonCount(MSEG_REASON_REPLY_ADMITTED), 1u);

  EXPECT_EQ(run(kIngress, Frame::udp4("198.18.5.10", kSelf, 5432, 40999)), 0);
}

TEST_F(DatapathPrivilegedTest, AdmitsEchoReplyOfAnAllowedPing) {
  ASSERT_EQ(run(kEgress, Frame::icmpEcho4(kSelf, "198.18.5.10", 8, 4242)), 1);

  EXPECT_EQ(run(kIngress, Frame::icmpEcho4("198.18.5.10", kSelf, 0, 4242)), 1);
  EXPECT_EQ(run(kIngress, Frame::icmpEcho4("198.18.5.10", kSelf, 0, 4243)), 0);
}

TEST_F(DatapathPrivilegedTest, NewPolicyVersionTakesEffectAtomically) {
  ASSERT_EQ(run(kEgress, Frame::udp4(kSelf, "198.18.5.10", 40000, 5432)), 1);
  std::string tightened = kPolicy;
  tightened.replace(tightened.find("ports: [5432, 6000-6099]"), 24, "ports: [6000-6099]      ");

  applyPolicy(tightened.c_str());

  EXPECT_EQ(run(kEgress, Frame::udp4(kSelf, "198.18.5.10", 40001, 5432)), 0);
  EXPECT_EQ(run(kEgress, Frame::udp4(kSelf, "198.18.5.10", 40002, 6001)), 1);
}

TEST_F(DatapathPrivilegedTest, RuleKeepsItsCountersAcrossPolicyVersions) {
  ASSERT_EQ(run(kEgress, Frame::udp4(kSelf, "198.18.5.10", 40000, 5432)), 1);

  applyPolicy(kPolicy);

  EXPECT_EQ(hitsOf("main/app-to-db"), 1u);
}

TEST_F(DatapathPrivilegedTest, UnmanagedWorkloadPassesUnjudged) {
  applyPolicy(R"(version: 1
workloads:
  - name: other
    cgroup: elsewhere.service
    labels: {tier: app}
inventory:
  - name: db
    cidrs: [198.18.5.10/32]
    labels: {tier: db}
segments:
  - name: main
    rules:
      - name: other-to-db
        from: {tier: app}
        to: {tier: db}
        protocol: tcp
        ports: [5432]
)");

  EXPECT_EQ(run(kEgress, Frame::udp4(kSelf, "198.18.9.9", 40000, 9)), 1);
}

// Every key of a pinned bank map, as raw bytes, for comparing the two banks.
std::set<std::vector<uint8_t>> pinnedBankKeys(const std::string& path) {
  std::set<std::vector<uint8_t>> keys;
  int fd = bpf_obj_get(path.c_str());
  EXPECT_GE(fd, 0) << "open " << path;
  if (fd < 0) {
    return keys;
  }
  bpf_map_info info{};
  uint32_t length = sizeof(info);
  EXPECT_EQ(bpf_obj_get_info_by_fd(fd, &info, &length), 0);
  std::vector<uint8_t> key(info.key_size), next(info.key_size);
  const void* previous = nullptr;
  while (bpf_map_get_next_key(fd, previous, next.data()) == 0) {
    keys.insert(next);
    key = next;
    previous = key.data();
  }
  close(fd);
  return keys;
}

TEST_F(DatapathPrivilegedTest, ARemovedPortStopsPassingAndReturnsWithThePolicy) {
  const auto to_db = [this](uint16_t port) {
    return run(kEgress, Frame::udp4(kSelf, "198.18.5.10", 40000, port));
  };
  std::string narrower = kPolicy;
  narrower.replace(narrower.find("[5432, 6000-6099]"), 17, "[6000-6099]");

  applyPolicy(narrower.c_str());
  EXPECT_EQ(to_db(5432), 0) << "the removed port still passes";
  EXPECT_EQ(to_db(6001), 1);
  ASSERT_TRUE(datapath_->catchUpInactiveBank());

  applyPolicy(kPolicy);
  EXPECT_EQ(to_db(5432), 1) << "the port is back in the policy but not in the kernel";
  EXPECT_EQ(to_db(6001), 1);
}

TEST_F(DatapathPrivilegedTest, BothBanksHoldTheSamePolicyOnceCaughtUp) {
  std::string narrower = kPolicy;
  narrower.replace(narrower.find("[5432, 6000-6099]"), 17, "[6000-6099]");
  applyPolicy(narrower.c_str());
  ASSERT_TRUE(datapath_->catchUpInactiveBank());

  for (const char* map : {"mseg_wl_v2", "mseg_peer_v2", "mseg_vrd_v2", "mseg_pvrd_v2"}) {
    const std::string bank = pin_dir_ + "/" + map + "_b";
    auto first = pinnedBankKeys(bank + "0");
    EXPECT_FALSE(first.empty()) << map;
    EXPECT_EQ(first, pinnedBankKeys(bank + "1")) << map << " differs between the banks";
  }
  auto expected = buildBank(compiled_, bindWorkloads(compiled_, {{"test.service", kRootCgroupId}}),
                            rule_ids_);
  EXPECT_EQ(pinnedBankKeys(pin_dir_ + "/mseg_pvrd_v2_b0").size(), expected.port_verdicts.size());
  EXPECT_EQ(pinnedBankKeys(pin_dir_ + "/mseg_vrd_v2_b0").size(), expected.verdicts.size());
}

}  // namespace
}  // namespace mseg::agent
