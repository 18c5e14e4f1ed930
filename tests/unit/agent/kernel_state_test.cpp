// From a compiled policy and the cgroups that exist to the exact keys and values the kernel's
// maps get: prefix lengths, port masking, uid keys, cgroup bindings and stable rule ids.
#include <algorithm>
#include <arpa/inet.h>

#include <gtest/gtest.h>

#include "kernel_state.hpp"
#include "mseg/policy/compiler.hpp"
#include "mseg/policy/incremental.hpp"

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

// A change compiled alone and turned into a bank delta leaves the bank exactly as building it
// from the full compile of the next policy does: verdicts, rule ids and workload flags.
class BankDeltaTest : public ::testing::Test {
protected:
  struct Built {
    policy::IndexedPolicy compiled;
    std::vector<uint32_t> rule_ids;
    BankContent bank;
  };

  Built build(const std::string& text) {
    policy::Diagnostics diagnostics;
    auto parsed = policy::parsePolicy(text, "test.yaml", diagnostics);
    EXPECT_TRUE(parsed) << diagnostics.format();
    auto compiled = policy::compileIndexed(
        std::make_shared<const policy::Policy>(std::move(*parsed)), diagnostics);
    EXPECT_TRUE(compiled) << diagnostics.format();
    Built built{std::move(*compiled), {}, {}};
    built.rule_ids = ids_.assign(built.compiled.compiled);
    built.bank = buildBank(built.compiled.compiled, bindings_, built.rule_ids);
    return built;
  }

  void expectDeltaBuildsTheNextBank(const std::string& base_text, const std::string& next_text) {
    Built base = build(base_text);
    policy::Diagnostics diagnostics;
    auto next = policy::parsePolicy(next_text, "test.yaml", diagnostics);
    ASSERT_TRUE(next) << diagnostics.format();
    auto result = policy::compileChange(*base.compiled.index, *next);
    ASSERT_TRUE(std::holds_alternative<policy::CompiledChange>(result));
    const auto& change = std::get<policy::CompiledChange>(result);
    std::map<uint32_t, uint32_t> added_ids;
    for (const auto& rule : change.added_rules) {
      added_ids[rule.index] = ids_.idOf(rule.name);
    }
    BankDelta delta = buildBankDelta(change, base.compiled.compiled.workloads, bindings_,
                                     base.rule_ids, added_ids);
    delta.applyTo(base.bank);

    Built full = build(next_text);
    EXPECT_EQ(differences(base.bank.workloads, full.bank.workloads), 0u);
    EXPECT_EQ(differences(base.bank.verdicts, full.bank.verdicts), 0u);
    EXPECT_EQ(differences(base.bank.port_verdicts, full.bank.port_verdicts), 0u);
  }

  // Keys in one map but not the other, or with other values.
  template <typename K, typename V>
  static size_t differences(const MapContent<K, V>& a, const MapContent<K, V>& b) {
    size_t different = 0;
    for (const auto& [key, value] : a) {
      auto other = b.find(key);
      different += other == b.end() || !BytesEqual<V>{}(other->second, value) ? 1 : 0;
    }
    for (const auto& [key, value] : b) {
      different += a.count(key) == 0 ? 1 : 0;
    }
    return different;
  }

  RuleIds ids_;
  std::vector<WorkloadBinding> bindings_ = {{42, "system.slice/postgresql.service", 1},
                                            {43, "system.slice/postgres-old.service", 1}};
};

TEST_F(BankDeltaTest, PortChangeRewritesItsEntriesUnderTheSameRuleId) {
  std::string next = kPolicy;
  next.replace(next.find("5432"), 4, "5433");
  expectDeltaBuildsTheNextBank(kPolicy, next);
}

TEST_F(BankDeltaTest, NewRuleOnAnUnmanagedDirectionChangesTheWorkloadFlags) {
  std::string next = std::string(kPolicy) + R"(      - name: db-out
        action: deny
        from: {tier: db}
        to: {tier: app}
)";
  expectDeltaBuildsTheNextBank(kPolicy, next);
  expectDeltaBuildsTheNextBank(next, kPolicy);
}

TEST_F(BankDeltaTest, UserOnlyWorkloadKeysFollowTheFirstWorkloadThatClaimsThem) {
  const std::string base = R"(version: 1
workloads:
  - {name: ops, user: 0, labels: {role: ops}}
  - {name: root, user: 0, labels: {role: root}}
inventory:
  - {name: app, cidrs: [198.18.1.0/24], labels: {tier: app}}
segments:
  - name: main
    rules:
      - {name: ops-out, from: {role: ops}, to: {tier: app}, protocol: tcp, ports: [22]}
)";
  std::string next = std::string(base) +
                     "      - {name: root-in, from: {tier: app}, to: {role: root}}\n";
  expectDeltaBuildsTheNextBank(base, next);
}

}  // namespace
}  // namespace mseg::agent
