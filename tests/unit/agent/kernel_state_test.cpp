// From a compiled policy and the cgroups that exist to the exact keys and values the kernel's
// maps get: prefix lengths, port masking, uid keys, cgroup bindings and stable rule ids.
#include <algorithm>
#include <arpa/inet.h>

#include <gtest/gtest.h>

#include "kernel_state.hpp"
#include "mseg/policy/compiler.hpp"

namespace mseg::agent {
namespace {

constexpr const char* kPolicy = R"(version: 1
workloads:
  - name: db
    cgroup: "system.slice/postgres*.service"
    labels: {tier: db}
  - name: backup
    cgroup: system.slice/postgresql.service
    user: 0
    labels: {tier: backup}
inventory:
  - name: app
    cidrs: [198.18.1.0/24, "fd00:1::/64"]
    labels: {tier: app}
segments:
  - name: main
    rules:
      - name: app-to-db
        from: {tier: app}
        to: {tier: db}
        protocol: tcp
        ports: [5432, 9100-9103]
      - name: app-anything-backup
        from: {tier: app}
        to: {tier: backup}
        protocol: any
)";

class KernelStateTest : public ::testing::Test {
protected:
  void SetUp() override {
    policy::Diagnostics diagnostics;
    auto compiled = policy::loadPolicyText(kPolicy, "test.yaml", diagnostics);
    ASSERT_TRUE(compiled) << diagnostics.format();
    policy_ = *compiled;
  }

  policy::CompiledPolicy policy_;
};

TEST_F(KernelStateTest, FirstWorkloadInPolicyOrderOwnsACgroupBothSelect) {
  auto bindings = bindWorkloads(policy_, {{"system.slice/postgresql.service", 42},
                                          {"system.slice/postgres-old.service", 43},
                                          {"system.slice/nginx.service", 44}});

  ASSERT_EQ(bindings.size(), 2u);
  EXPECT_EQ(bindings[0].cgroup_id, 42u);
  EXPECT_EQ(bindings[0].workload_id, policy_.workloads[0].id);
  EXPECT_EQ(bindings[1].cgroup_id, 43u);
}

TEST_F(KernelStateTest, GlobDoesNotCrossPathComponents) {
  auto bindings = bindWorkloads(policy_, {{"system.slice/postgres.service/worker", 50}});

  EXPECT_TRUE(bindings.empty());
}

TEST_F(KernelStateTest, WorkloadWithoutUsersMatchesAnyUid) {
  auto bank = buildBank(policy_, {{42, "system.slice/postgresql.service", 1}},
                        RuleIds().assign(policy_));

  mseg_workload_key key{};
  key.cgroup_id = 42;
  key.uid = MSEG_UID_ANY;
  ASSERT_EQ(bank.workloads.count(key), 1u);
  EXPECT_EQ(bank.workloads.at(key).flags & MSEG_WL_INGRESS_MANAGED, MSEG_WL_INGRESS_MANAGED);
  EXPECT_EQ(bank.workloads.at(key).flags & MSEG_WL_EGRESS_MANAGED, 0u);
}

TEST_F(KernelStateTest, SinglePortGoesToThePortMapAndARangeToAlignedTriePrefixes) {
  auto ids = RuleIds().assign(policy_);
  auto bank = buildBank(policy_, {}, ids);

  mseg_port_verdict_key port{};
  port.workload_id = policy_.workloads[0].id;
  port.peer_id = policy_.peers[0].id;
  port.direction = MSEG_DIR_INGRESS;
  port.protocol = IPPROTO_TCP;
  port.port = htons(5432);
  ASSERT_EQ(bank.port_verdicts.count(port), 1u);
  EXPECT_EQ(bank.port_verdicts.at(port).verdict, MSEG_VERDICT_ALLOW);

  mseg_verdict_key block{};
  block.prefixlen = MSEG_VERDICT_PREFIX_ANY_PORT + 14;  // 9100-9103: one block of four
  block.workload_id = port.workload_id;
  block.peer_id = port.peer_id;
  block.direction = port.direction;
  block.protocol = port.protocol;
  block.port = htons(9100);
  EXPECT_EQ(bank.verdicts.count(block), 1u);

  // A single port is never also written to the trie: one home per entry.
  mseg_verdict_key full = block;
  full.prefixlen = MSEG_VERDICT_PREFIX_FULL;
  full.port = htons(5432);
  EXPECT_EQ(bank.verdicts.count(full), 0u);
}

TEST_F(KernelStateTest, AnyProtocolRuleStopsAfterTheDirection) {
  auto bank = buildBank(policy_, {}, RuleIds().assign(policy_));

  mseg_verdict_key any{};
  any.prefixlen = MSEG_VERDICT_PREFIX_ANY_PROTO;
  any.workload_id = policy_.workloads[1].id;
  any.peer_id = policy_.peers[0].id;
  any.direction = MSEG_DIR_INGRESS;
  EXPECT_EQ(bank.verdicts.count(any), 1u);
}

TEST_F(KernelStateTest, InventoryIpv4IsStoredIpv4Mapped) {
  auto bank = buildBank(policy_, {}, RuleIds().assign(policy_));

  mseg_peer_key key{};
  key.prefixlen = 96 + 24;
  key.addr[10] = 0xff;
  key.addr[11] = 0xff;
  key.addr[12] = 198;
  key.addr[13] = 18;
  key.addr[14] = 1;
  EXPECT_EQ(bank.peers.count(key), 1u);
}

TEST_F(KernelStateTest, RuleKeepsItsIdWhileItsNameStays) {
  RuleIds ids;
  auto first = ids.assign(policy_);

  auto second = ids.assign(policy_);

  EXPECT_EQ(first, second);
  EXPECT_GE(first[policy::kFirstRuleIndex], static_cast<uint32_t>(MSEG_FIRST_RULE_ID));
}

TEST_F(KernelStateTest, RuleThatComesBackGetsItsIdBackAndUsesNoNewOne) {
  RuleIds ids;
  auto full = ids.assign(policy_);
  policy::CompiledPolicy without_first = policy_;
  without_first.rules.erase(without_first.rules.begin());

  for (int swap = 0; swap < 3; swap++) {
    ids.assign(without_first);
    auto again = ids.assign(policy_);
    EXPECT_EQ(again, full) << "swap " << swap;
  }
  policy::CompiledPolicy with_new = policy_;
  with_new.rules.back().name = "main/brand-new";
  auto fresh = ids.assign(with_new);
  EXPECT_EQ(fresh[with_new.rules.back().index], *std::max_element(full.begin(), full.end()) + 1)
      << "swapping policies back and forth used up ids";
}

TEST_F(KernelStateTest, NewRuleNameGetsAFreshIdAfterAdoptedOnes) {
  RuleIds ids;
  ids.adopt({{7, "main/app-to-db"}});

  auto assigned = ids.assign(policy_);

  EXPECT_EQ(assigned[policy::kFirstRuleIndex], 7u);
  EXPECT_EQ(assigned[policy::kFirstRuleIndex + 1], 8u);
}

}  // namespace
}  // namespace mseg::agent
