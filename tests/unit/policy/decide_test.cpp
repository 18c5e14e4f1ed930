// decide() and peerIdentityOf(): the userspace model of the kernel's lookup.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "mseg/policy/address.hpp"
#include "mseg/policy/compiled.hpp"
#include "mseg/policy/compiler.hpp"

namespace mseg::policy {
namespace {

class DecideTest : public ::testing::Test {
protected:
  void SetUp() override {
    Diagnostics out;
    auto compiled = loadPolicyFile(std::string(MSEG_EXAMPLES_DIR) + "/erp-crm.yaml", out);
    ASSERT_TRUE(compiled.ok()) << out.format();
    example_ = std::move(compiled).value();
  }

  uint32_t workload(std::string_view name) const {
    for (const auto& w : example_.workloads) {
      if (w.name == name) {
        return w.id;
      }
    }
    ADD_FAILURE() << "no workload " << name;
    return 0;
  }

  uint32_t peerOf(std::string_view address) const {
    auto parsed = parseAddress(address);
    EXPECT_TRUE(parsed.ok()) << address;
    return parsed.ok() ? peerIdentityOf(example_, *parsed) : 0;
  }

  std::string ruleOf(const Decision& decision) const {
    if (decision.rule_index == kRuleDefaultDeny) {
      return "default deny";
    }
    if (decision.rule_index < kFirstRuleIndex) {
      return "none";
    }
    return example_.rules.at(decision.rule_index - kFirstRuleIndex).name;
  }

  Verdict ingressVerdict(uint32_t workload_id, uint32_t peer, Protocol protocol,
                         uint16_t port) const {
    return decide(example_, Direction::Ingress, workload_id, peer, protocol, port).verdict;
  }

  // A policy of one managed workload and one peer, entries given by the test.
  static CompiledPolicy handMade(std::vector<VerdictEntry> entries) {
    CompiledPolicy policy;
    CompiledWorkload w;
    w.id = kFirstWorkloadIdentity;
    w.egress_managed = true;
    policy.workloads.push_back(w);
    policy.entries = std::move(entries);
    return policy;
  }

  CompiledPolicy example_;
};

constexpr uint32_t kW = kFirstWorkloadIdentity;
constexpr uint32_t kP = kFirstPeerIdentity;

TEST_F(DecideTest, AllowsTheAppServerToReachTheDatabase) {
  auto decision = decide(example_, Direction::Egress, workload("erp-app"), peerOf("198.18.0.10"),
                         Protocol::Tcp, 5432);

  EXPECT_EQ(decision.verdict, Verdict::Allow);
  EXPECT_EQ(ruleOf(decision), "erp-core/app-to-db");
}

TEST_F(DecideTest, DeniesTcpToAnUnlistedPortByDefault) {
  auto decision = decide(example_, Direction::Egress, workload("erp-app"), peerOf("198.18.0.10"),
                         Protocol::Tcp, 5433);

  EXPECT_EQ(decision.verdict, Verdict::Deny);
  EXPECT_EQ(decision.rule_index, kRuleDefaultDeny);
}

TEST_F(DecideTest, DeniesTheWebTierReachingTheDatabaseByAnExplicitRule) {
  auto egress = decide(example_, Direction::Egress, workload("crm-web"), peerOf("fd00:6d73::10"),
                       Protocol::Tcp, 5432);
  auto ingress = decide(example_, Direction::Ingress, workload("erp-db"), peerOf("198.18.0.30"),
                        Protocol::Udp, 53);

  EXPECT_EQ(egress.verdict, Verdict::Deny);
  EXPECT_EQ(ruleOf(egress), "erp-core/no-web-to-db");
  EXPECT_EQ(ingress.verdict, Verdict::Deny);
  EXPECT_EQ(ruleOf(ingress), "erp-core/no-web-to-db");
}

TEST_F(DecideTest, AllowsEveryPortOfARangeAndNoneBeside) {
  uint32_t mgmt = peerOf("198.18.0.50");
  uint32_t db = workload("erp-db");

  for (uint16_t port = 9100; port <= 9199; ++port) {
    EXPECT_EQ(ingressVerdict(db, mgmt, Protocol::Tcp, port), Verdict::Allow) << port;
  }
  EXPECT_EQ(ingressVerdict(db, mgmt, Protocol::Tcp, 9099), Verdict::Deny);
  EXPECT_EQ(ingressVerdict(db, mgmt, Protocol::Tcp, 9200), Verdict::Deny);
  EXPECT_EQ(ingressVerdict(db, mgmt, Protocol::Udp, 9100), Verdict::Deny);
}

TEST_F(DecideTest, MatchesIcmpByType) {
  uint32_t mgmt = peerOf("198.18.0.50");
  uint32_t web = workload("crm-web");

  EXPECT_EQ(ingressVerdict(web, mgmt, Protocol::Icmp, 8), Verdict::Allow);
  EXPECT_EQ(ingressVerdict(web, mgmt, Protocol::Icmp, 13), Verdict::Deny);
  EXPECT_EQ(ingressVerdict(web, mgmt, Protocol::Icmpv6, 128), Verdict::Allow);
}

TEST_F(DecideTest, MakesTheAuditOnlyEgressOfTheIntegrationJobReportOnly) {
  uint32_t sync = workload("erp-sync");

  auto saas = decide(example_, Direction::Egress, sync, peerOf("198.19.0.7"), Protocol::Tcp, 443);
  auto dns = decide(example_, Direction::Egress, sync, peerOf("192.0.2.53"), Protocol::Udp, 53);
  auto other = decide(example_, Direction::Egress, sync, peerOf("192.0.2.53"), Protocol::Tcp, 25);

  EXPECT_EQ(saas.verdict, Verdict::Allow);
  EXPECT_EQ(ruleOf(saas), "integration/sync-to-saas");
  EXPECT_EQ(dns.verdict, Verdict::Allow);
  EXPECT_EQ(ruleOf(dns), "integration/sync-dns");
  EXPECT_EQ(other.verdict, Verdict::Audit);
  EXPECT_EQ(other.rule_index, kRuleDefaultDeny);
}

TEST_F(DecideTest, GivesNoneForADirectionNoRuleManages) {
  auto decision = decide(example_, Direction::Egress, workload("erp-db"), peerOf("192.0.2.1"),
                         Protocol::Tcp, 443);

  EXPECT_EQ(decision.verdict, Verdict::None);
  EXPECT_EQ(decision.rule_index, kRuleNone);
}

TEST_F(DecideTest, GivesNoneForAnUnknownWorkload) {
  auto decision = decide(example_, Direction::Egress, 999, kPeerWorld, Protocol::Tcp, 443);

  EXPECT_EQ(decision.verdict, Verdict::None);
}

TEST_F(DecideTest, TakesTheLongestPortMatch) {
  auto policy = handMade({
      {Direction::Egress, kW, kP, Protocol::Tcp, 0, 0, Verdict::Deny, 5},
      {Direction::Egress, kW, kP, Protocol::Tcp, 8192, 3, Verdict::Audit, 6},
      {Direction::Egress, kW, kP, Protocol::Tcp, 8443, 16, Verdict::Allow, 7},
      {Direction::Egress, kW, kP, Protocol::Any, 0, 0, Verdict::Allow, 8},
  });

  EXPECT_EQ(decide(policy, Direction::Egress, kW, kP, Protocol::Tcp, 8443).rule_index, 7u);
  EXPECT_EQ(decide(policy, Direction::Egress, kW, kP, Protocol::Tcp, 8444).rule_index, 6u);
  EXPECT_EQ(decide(policy, Direction::Egress, kW, kP, Protocol::Tcp, 22).rule_index, 5u);
  EXPECT_EQ(decide(policy, Direction::Egress, kW, kP, Protocol::Udp, 53).rule_index, 8u);
}

TEST_F(DecideTest, TakesTheHigherVerdictOfTheExactPeerAndTheAnyPeer) {
  auto policy = handMade({
      {Direction::Egress, kW, kP, Protocol::Tcp, 443, 16, Verdict::Allow, 5},
      {Direction::Egress, kW, kPeerAny, Protocol::Any, 0, 0, Verdict::Audit, 6},
  });

  auto decision = decide(policy, Direction::Egress, kW, kP, Protocol::Tcp, 443);

  EXPECT_EQ(decision.verdict, Verdict::Audit);
  EXPECT_EQ(decision.rule_index, 6u);
}

TEST_F(DecideTest, ReportsTheExactPeerRuleOnATie) {
  auto policy = handMade({
      {Direction::Egress, kW, kP, Protocol::Tcp, 443, 16, Verdict::Allow, 9},
      {Direction::Egress, kW, kPeerAny, Protocol::Tcp, 443, 16, Verdict::Allow, 5},
  });

  auto exact = decide(policy, Direction::Egress, kW, kP, Protocol::Tcp, 443);
  auto other = decide(policy, Direction::Egress, kW, kP + 1, Protocol::Tcp, 443);

  EXPECT_EQ(exact.rule_index, 9u);
  EXPECT_EQ(other.rule_index, 5u);
}

TEST_F(DecideTest, FindsTheMostSpecificInventoryPrefix) {
  EXPECT_EQ(example_.peers.at(5).name, "office");

  EXPECT_EQ(peerOf("198.18.0.200"), example_.peers.at(5).id);
  EXPECT_EQ(peerOf("198.18.0.50"), example_.peers.at(4).id);
  EXPECT_EQ(peerOf("fd00:6d73::8001"), example_.peers.at(5).id);
  EXPECT_EQ(peerOf("fd00:6d73::10"), example_.peers.at(0).id);
}

TEST_F(DecideTest, PrefersTheNarrowerOfNestedPrefixes) {
  CompiledPolicy policy;
  policy.prefixes.push_back({*parseAddress("10.0.0.0"), 96 + 8, kP});
  policy.prefixes.push_back({*parseAddress("10.1.2.3"), 128, kP + 1});
  policy.prefixes.push_back({*parseAddress("10.1.0.0"), 96 + 16, kP + 2});

  EXPECT_EQ(peerIdentityOf(policy, *parseAddress("10.1.2.3")), kP + 1);
  EXPECT_EQ(peerIdentityOf(policy, *parseAddress("10.1.9.9")), kP + 2);
  EXPECT_EQ(peerIdentityOf(policy, *parseAddress("10.200.0.1")), kP);
}

TEST_F(DecideTest, ResolvesIpv4MappedIpv6AddressesAsIpv4Peers) {
  EXPECT_EQ(peerOf("::ffff:198.18.0.10"), peerOf("198.18.0.10"));
  EXPECT_NE(peerOf("198.18.0.10"), kPeerWorld);
}

TEST_F(DecideTest, GivesWorldToAnAddressNoEntryCovers) {
  EXPECT_EQ(peerOf("192.0.2.1"), kPeerWorld);
  EXPECT_EQ(peerOf("2001:db8::1"), kPeerWorld);
}

TEST_F(DecideTest, SelectsCgroupsByGlobWithinOnePathComponent) {
  CompiledWorkload sync;
  sync.cgroup_patterns = {"system.slice/erp-sync*.service"};

  EXPECT_TRUE(workloadSelects(sync, "system.slice/erp-sync@2.service", 1000));
  EXPECT_FALSE(workloadSelects(sync, "system.slice/erp-sync/x.service", 1000));
  EXPECT_FALSE(workloadSelects(sync, "user.slice/erp-sync.service", 1000));
}

TEST_F(DecideTest, SelectsByUserWhenTheWorkloadNamesUsers) {
  CompiledWorkload batch;
  batch.uids = {1000, 1001};
  CompiledWorkload anyone;
  anyone.cgroup_patterns = {"a.service"};

  EXPECT_TRUE(workloadSelects(batch, "anything/at/all", 1001));
  EXPECT_FALSE(workloadSelects(batch, "anything/at/all", 0));
  EXPECT_TRUE(workloadSelects(anyone, "a.service", 12345));
}

}  // namespace
}  // namespace mseg::policy
