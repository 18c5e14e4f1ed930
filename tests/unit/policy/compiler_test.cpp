// The compiler: identities, verdict entries, precedence and host-specific warnings.
#include "mseg/policy/compiler.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <tuple>
#include <vector>

namespace mseg::policy {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

// Two workloads and their hosts; what follows is the body of segment `shop` (from line 21).
constexpr std::string_view kHeader = R"(version: 1
workloads:
  - name: web
    cgroup: web.service
    labels: {app: shop, tier: web}
  - name: db
    cgroup: db.service
    labels: {app: shop, tier: db}
inventory:
  - name: web-hosts
    cidrs: [198.18.0.10]
    labels: {app: shop, tier: web}
  - name: db-hosts
    cidrs: [198.18.0.20]
    labels: {app: shop, tier: db}
  - name: office
    cidrs: [198.18.0.128/25]
    labels: {zone: office}
segments:
  - name: shop
)";

constexpr uint32_t kWeb = kFirstWorkloadIdentity;
constexpr uint32_t kDb = kFirstWorkloadIdentity + 1;
constexpr uint32_t kWebHosts = kFirstPeerIdentity;
constexpr uint32_t kDbHosts = kFirstPeerIdentity + 1;
constexpr uint32_t kOffice = kFirstPeerIdentity + 2;

// Entries compared as tuples so a failure prints every field.
using EntryTuple =
    std::tuple<Direction, uint32_t, uint32_t, Protocol, uint16_t, int, Verdict, uint32_t>;

class PolicyCompilerTest : public ::testing::Test {
protected:
  CompiledPolicy compile(std::string_view segment_body) {
    std::string text = std::string(kHeader) + std::string(segment_body);
    auto compiled = loadPolicyText(text, "p.yaml", diagnostics_);
    EXPECT_TRUE(compiled.ok()) << diagnostics_.format();
    return compiled.ok() ? std::move(compiled).value() : CompiledPolicy{};
  }

  static std::vector<EntryTuple> entriesOf(const CompiledPolicy& policy) {
    std::vector<EntryTuple> tuples;
    for (const auto& e : policy.entries) {
      tuples.emplace_back(e.direction, e.workload_id, e.peer_id, e.protocol, e.port,
                          e.port_prefix_len, e.verdict, e.rule_index);
    }
    return tuples;
  }

  std::vector<std::string> warnings() const {
    std::vector<std::string> lines;
    for (const auto& diagnostic : diagnostics_.all()) {
      lines.push_back(diagnostic.toString());
    }
    return lines;
  }

  Diagnostics diagnostics_;
};

constexpr auto kEgress = Direction::Egress;
constexpr auto kIngress = Direction::Ingress;

TEST_F(PolicyCompilerTest, CompilesARuleIntoEgressAndIngressEntries) {
  auto policy = compile(R"(    rules:
      - name: web-to-db
        from: {tier: web}
        to: {tier: db}
        protocol: tcp
        ports: [5432]
)");

  EXPECT_THAT(entriesOf(policy),
              ElementsAre(EntryTuple{kEgress, kWeb, kDbHosts, Protocol::Tcp, 5432, 16,
                                     Verdict::Allow, kFirstRuleIndex},
                          EntryTuple{kIngress, kDb, kWebHosts, Protocol::Tcp, 5432, 16,
                                     Verdict::Allow, kFirstRuleIndex}));
  EXPECT_TRUE(policy.workloads[0].egress_managed);
  EXPECT_FALSE(policy.workloads[0].ingress_managed);
  EXPECT_FALSE(policy.workloads[1].egress_managed);
  EXPECT_TRUE(policy.workloads[1].ingress_managed);
  EXPECT_FALSE(policy.workloads[0].egress_audit);
  EXPECT_THAT(warnings(), IsEmpty());
}

TEST_F(PolicyCompilerTest, NumbersIdentitiesAndRulesInFileOrder) {
  auto policy = compile(R"(    rules:
      - {name: a, from: {tier: web}, to: {tier: db}}
  - name: other
    mode: audit
    rules:
      - {name: b, action: deny, from: {tier: db}, to: any}
)");

  ASSERT_EQ(policy.workloads.size(), 2u);
  EXPECT_EQ(policy.workloads[0].id, kWeb);
  EXPECT_EQ(policy.workloads[1].name, "db");
  EXPECT_EQ(policy.workloads[1].id, kDb);
  EXPECT_THAT(policy.workloads[1].cgroup_patterns, ElementsAre("db.service"));
  ASSERT_EQ(policy.peers.size(), 3u);
  EXPECT_EQ(policy.peers[2].id, kOffice);
  EXPECT_EQ(policy.peers[2].name, "office");
  ASSERT_EQ(policy.prefixes.size(), 3u);
  EXPECT_EQ(policy.prefixes[2].prefix_len, 96 + 25);
  EXPECT_EQ(policy.prefixes[2].peer_id, kOffice);
  ASSERT_EQ(policy.rules.size(), 2u);
  EXPECT_EQ(policy.rules[0].index, kFirstRuleIndex);
  EXPECT_EQ(policy.rules[0].name, "shop/a");
  EXPECT_EQ(policy.rules[0].segment, "shop");
  EXPECT_EQ(policy.rules[0].where, "p.yaml:22:9");
  EXPECT_EQ(policy.rules[1].index, kFirstRuleIndex + 1);
  EXPECT_EQ(policy.rules[1].name, "other/b");
  EXPECT_EQ(policy.rules[1].verdict, Verdict::Audit);
  EXPECT_EQ(policy.source_name, "p.yaml");
  EXPECT_EQ(policy.content_hash.size(), 64u);
}

TEST_F(PolicyCompilerTest, SplitsPortRangesIntoTheFewestAlignedBlocks) {
  auto blocks = portBlocks(9100, 9199);

  std::vector<std::pair<int, int>> pairs;
  for (const auto& block : blocks) {
    pairs.emplace_back(block.port, block.prefix_len);
  }
  EXPECT_THAT(pairs, ElementsAre(std::pair{9100, 14}, std::pair{9104, 12}, std::pair{9120, 11},
                                 std::pair{9152, 11}, std::pair{9184, 12}));
}

TEST_F(PolicyCompilerTest, SplitsEdgeRangesOfThePortSpace) {
  EXPECT_EQ(portBlocks(80, 80).size(), 1u);
  EXPECT_EQ(portBlocks(80, 80)[0].prefix_len, 16);
  EXPECT_EQ(portBlocks(0, 65535).size(), 1u);
  EXPECT_EQ(portBlocks(0, 65535)[0].prefix_len, 0);
  EXPECT_EQ(portBlocks(1, 65535).size(), 16u);
  EXPECT_EQ(portBlocks(32768, 65535).size(), 1u);
  EXPECT_EQ(portBlocks(32768, 65535)[0].prefix_len, 1);
}

TEST_F(PolicyCompilerTest, CoversEachPortOfARangeExactlyOnce) {
  for (auto [first, last] : {std::pair{1, 1023}, std::pair{1024, 49151}, std::pair{5, 6},
                             std::pair{9100, 9199}, std::pair{65534, 65535}}) {
    std::vector<int> covered(65536, 0);

    for (const auto& block :
         portBlocks(static_cast<uint16_t>(first), static_cast<uint16_t>(last))) {
      uint32_t size = 1u << (16 - block.prefix_len);
      ASSERT_EQ(block.port % size, 0u) << "unaligned block at " << block.port;
      for (uint32_t port = block.port; port < block.port + size; ++port) {
        ++covered[port];
      }
    }

    for (int port = 0; port < 65536; ++port) {
      ASSERT_EQ(covered[port], port >= first && port <= last ? 1 : 0) << "port " << port;
    }
  }
}

TEST_F(PolicyCompilerTest, MergesOverlappingPortRangesBeforeSplitting) {
  auto policy = compile(R"(    rules:
      - name: r
        from: {tier: web}
        to: {tier: db}
        protocol: udp
        ports: [8-11, 10-15, 16]
)");

  EXPECT_THAT(entriesOf(policy), ElementsAre(EntryTuple{kEgress, kWeb, kDbHosts, Protocol::Udp, 8,
                                                        13, Verdict::Allow, kFirstRuleIndex},
                                             EntryTuple{kEgress, kWeb, kDbHosts, Protocol::Udp, 16,
                                                        16, Verdict::Allow, kFirstRuleIndex},
                                             EntryTuple{kIngress, kDb, kWebHosts, Protocol::Udp, 8,
                                                        13, Verdict::Allow, kFirstRuleIndex},
                                             EntryTuple{kIngress, kDb, kWebHosts, Protocol::Udp, 16,
                                                        16, Verdict::Allow, kFirstRuleIndex}));
}

TEST_F(PolicyCompilerTest, UsesThePortFieldForIcmpTypes) {
  auto policy = compile(R"(    rules:
      - {name: ping, from: {tier: web}, to: {tier: db}, protocol: icmp, icmp-types: [8, 0, 8]}
      - {name: all6, from: {tier: web}, to: {tier: db}, protocol: icmpv6}
)");

  auto entries = entriesOf(policy);
  ASSERT_EQ(entries.size(), 6u);
  EXPECT_EQ(entries[0], (EntryTuple{kEgress, kWeb, kDbHosts, Protocol::Icmp, 0, 16, Verdict::Allow,
                                    kFirstRuleIndex}));
  EXPECT_EQ(entries[1], (EntryTuple{kEgress, kWeb, kDbHosts, Protocol::Icmp, 8, 16, Verdict::Allow,
                                    kFirstRuleIndex}));
  EXPECT_EQ(entries[2], (EntryTuple{kEgress, kWeb, kDbHosts, Protocol::Icmpv6, 0, 0, Verdict::Allow,
                                    kFirstRuleIndex + 1}));
}

TEST_F(PolicyCompilerTest, MatchesSelectorValueListsAsAnyOf) {
  auto policy = compile(R"(    rules:
      - {name: r, from: {tier: [web, db]}, to: {zone: office}, protocol: tcp, ports: [443]}
)");

  EXPECT_TRUE(policy.workloads[0].egress_managed);
  EXPECT_TRUE(policy.workloads[1].egress_managed);
  EXPECT_THAT(entriesOf(policy), ElementsAre(EntryTuple{kEgress, kWeb, kOffice, Protocol::Tcp, 443,
                                                        16, Verdict::Allow, kFirstRuleIndex},
                                             EntryTuple{kEgress, kDb, kOffice, Protocol::Tcp, 443,
                                                        16, Verdict::Allow, kFirstRuleIndex}));
}

TEST_F(PolicyCompilerTest, RaisesANarrowAllowUnderAWiderDenyToDeny) {
  auto policy = compile(R"(    rules:
      - {name: allow-pg, from: {tier: web}, to: {tier: db}, protocol: tcp, ports: [5432]}
      - {name: allow-web, from: {tier: web}, to: {tier: db}, protocol: tcp, ports: [80]}
      - {name: no-db, action: deny, from: {tier: web}, to: {tier: db}, protocol: tcp,
         ports: [5000-5999]}
)");

  auto entries = entriesOf(policy);
  auto egress_pg = EntryTuple{kEgress, kWeb, kDbHosts,      Protocol::Tcp,
                              5432,    16,   Verdict::Deny, kFirstRuleIndex + 2};
  auto egress_web = EntryTuple{kEgress, kWeb, kDbHosts,       Protocol::Tcp,
                               80,      16,   Verdict::Allow, kFirstRuleIndex + 1};
  EXPECT_THAT(entries, ::testing::Contains(egress_pg));
  EXPECT_THAT(entries, ::testing::Contains(egress_web));
}

TEST_F(PolicyCompilerTest, RaisesEveryPortUnderAProtocolAnyDeny) {
  auto policy = compile(R"(    rules:
      - {name: allow-pg, from: {tier: web}, to: {tier: db}, protocol: tcp, ports: [5432]}
      - {name: no-db, action: deny, from: {tier: web}, to: {tier: db}}
)");

  EXPECT_THAT(entriesOf(policy),
              ElementsAre(EntryTuple{kEgress, kWeb, kDbHosts, Protocol::Any, 0, 0, Verdict::Deny,
                                     kFirstRuleIndex + 1},
                          EntryTuple{kEgress, kWeb, kDbHosts, Protocol::Tcp, 5432, 16,
                                     Verdict::Deny, kFirstRuleIndex + 1},
                          EntryTuple{kIngress, kDb, kWebHosts, Protocol::Any, 0, 0, Verdict::Deny,
                                     kFirstRuleIndex + 1},
                          EntryTuple{kIngress, kDb, kWebHosts, Protocol::Tcp, 5432, 16,
                                     Verdict::Deny, kFirstRuleIndex + 1}));
}

TEST_F(PolicyCompilerTest, KeepsAnAllowWiderThanADeny) {
  auto policy = compile(R"(    rules:
      - {name: no-ssh, action: deny, from: {tier: web}, to: {tier: db}, protocol: tcp, ports: [22]}
      - {name: all-tcp, from: {tier: web}, to: {tier: db}, protocol: tcp}
)");

  auto entries = entriesOf(policy);
  ASSERT_EQ(entries.size(), 4u);
  EXPECT_EQ(entries[0], (EntryTuple{kEgress, kWeb, kDbHosts, Protocol::Tcp, 0, 0, Verdict::Allow,
                                    kFirstRuleIndex + 1}));
  EXPECT_EQ(entries[1], (EntryTuple{kEgress, kWeb, kDbHosts, Protocol::Tcp, 22, 16, Verdict::Deny,
                                    kFirstRuleIndex}));
}

TEST_F(PolicyCompilerTest, RanksAuditAboveAllowAndBelowDeny) {
  auto policy = compile(R"(    rules:
      - {name: allow, from: {tier: web}, to: {tier: db}, protocol: tcp, ports: [443]}
      - {name: watch, action: deny, mode: audit, from: {tier: web}, to: {tier: db}, protocol: tcp}
      - {name: block, action: deny, from: {tier: web}, to: {tier: db}, protocol: tcp, ports: [25]}
)");

  auto entries = entriesOf(policy);
  ASSERT_EQ(entries.size(), 6u);
  EXPECT_EQ(entries[0], (EntryTuple{kEgress, kWeb, kDbHosts, Protocol::Tcp, 0, 0, Verdict::Audit,
                                    kFirstRuleIndex + 1}));
  EXPECT_EQ(entries[1], (EntryTuple{kEgress, kWeb, kDbHosts, Protocol::Tcp, 25, 16, Verdict::Deny,
                                    kFirstRuleIndex + 2}));
  EXPECT_EQ(entries[2], (EntryTuple{kEgress, kWeb, kDbHosts, Protocol::Tcp, 443, 16, Verdict::Audit,
                                    kFirstRuleIndex + 1}));
}

TEST_F(PolicyCompilerTest, MergesDuplicateKeysToTheHighestVerdictThenTheEarliestRule) {
  auto policy = compile(R"(    rules:
      - {name: a, from: {tier: web}, to: {tier: db}, protocol: tcp, ports: [443]}
      - {name: b, from: {tier: web}, to: {tier: db}, protocol: tcp, ports: [443]}
      - {name: c, action: deny, mode: audit, from: {tier: web}, to: {tier: db}, protocol: udp,
         ports: [53]}
      - {name: d, action: deny, mode: audit, from: {tier: web}, to: {tier: db}, protocol: udp,
         ports: [53]}
      - {name: e, from: {tier: web}, to: {tier: db}, protocol: udp, ports: [53]}
)");

  auto entries = entriesOf(policy);
  ASSERT_EQ(entries.size(), 4u);
  EXPECT_EQ(entries[0], (EntryTuple{kEgress, kWeb, kDbHosts, Protocol::Tcp, 443, 16, Verdict::Allow,
                                    kFirstRuleIndex}));
  EXPECT_EQ(entries[1], (EntryTuple{kEgress, kWeb, kDbHosts, Protocol::Udp, 53, 16, Verdict::Audit,
                                    kFirstRuleIndex + 2}));
}

TEST_F(PolicyCompilerTest, MakesTheDefaultDenyAuditOnlyWhenEveryManagingRuleAudits) {
  auto policy = compile(R"(    mode: audit
    rules:
      - {name: a, from: {tier: web}, to: {tier: db}, protocol: tcp, ports: [443]}
      - {name: b, mode: enforce, from: {zone: office}, to: {tier: db}, protocol: tcp}
)");

  const auto& web = policy.workloads[0];
  const auto& db = policy.workloads[1];
  EXPECT_TRUE(web.egress_managed);
  EXPECT_TRUE(web.egress_audit);
  EXPECT_TRUE(db.ingress_managed);
  EXPECT_FALSE(db.ingress_audit);
  EXPECT_EQ(policy.rules[0].verdict, Verdict::Allow);
}

TEST_F(PolicyCompilerTest, CompilesAnyAndWorldToReservedPeers) {
  auto policy = compile(R"(    rules:
      - {name: out, from: {tier: web}, to: world, protocol: udp, ports: [53]}
      - {name: in, from: any, to: {tier: db}, protocol: tcp, ports: [5432]}
)");

  EXPECT_THAT(entriesOf(policy),
              ElementsAre(EntryTuple{kEgress, kWeb, kPeerWorld, Protocol::Udp, 53, 16,
                                     Verdict::Allow, kFirstRuleIndex},
                          EntryTuple{kIngress, kDb, kPeerAny, Protocol::Tcp, 5432, 16,
                                     Verdict::Allow, kFirstRuleIndex + 1}));
  EXPECT_FALSE(policy.workloads[0].ingress_managed);
  EXPECT_FALSE(policy.workloads[1].egress_managed);
}

TEST_F(PolicyCompilerTest, SelectsInventoryOnlyAsPeersNeverAsLocalWorkloads) {
  auto policy = compile(R"(    rules:
      - {name: office-in, from: {zone: office}, to: {tier: web}, protocol: tcp, ports: [443]}
)");

  EXPECT_THAT(entriesOf(policy), ElementsAre(EntryTuple{kIngress, kWeb, kOffice, Protocol::Tcp, 443,
                                                        16, Verdict::Allow, kFirstRuleIndex}));
}

TEST_F(PolicyCompilerTest, WarnsThatAPolicyWithoutRulesEnforcesNothing) {
  auto policy = compile("    rules: []\n");
  auto empty = loadPolicyText("version: 1\n", "p.yaml", diagnostics_);

  ASSERT_TRUE(empty.ok()) << diagnostics_.format();
  EXPECT_FALSE(policy.workloads[0].egress_managed);
  const std::string warning =
      "p.yaml: warning: policy has no rules: nothing is enforced; every workload is unmanaged "
      "and all its traffic passes";
  EXPECT_THAT(warnings(), ElementsAre(warning, warning));
}

TEST_F(PolicyCompilerTest, WarnsWhichSideOfARuleMatchesNothing) {
  auto policy = compile(R"(    rules:
      - name: r
        from: {tier: web, app: other}
        to: {tier: db}
)");

  EXPECT_THAT(warnings(), ElementsAre("p.yaml:23:15: warning: `from` of rule `shop/r` matches no "
                                      "workload or inventory entry on this host"));
  EXPECT_THAT(policy.entries, IsEmpty());
  // Selected as a destination, db is managed all the same: its ingress is now default deny.
  EXPECT_TRUE(policy.workloads[1].ingress_managed);
}

TEST_F(PolicyCompilerTest, WarnsAboutARuleWithNoLocalWorkloadOnEitherSide) {
  compile(R"(    rules:
      - {name: r, from: {zone: office}, to: world}
)");

  EXPECT_THAT(warnings(), ElementsAre("p.yaml:22:9: warning: rule `shop/r` selects no workload of "
                                      "this host on either side, so it has no effect here"));
}

// A deny naming a network does not reach an address a narrower inventory entry claims: the
// most specific prefix decides an address's identity. Found by a user who expected
// "deny beats allow" to hold for the jump host inside the denied management network.
TEST_F(PolicyCompilerTest, WarnsWhenADenyMissesANarrowerInventoryEntryInsideItsNetwork) {
  constexpr const char* kText = R"(version: 1
workloads:
  - {name: web, cgroup: web.service, labels: {tier: web}}
inventory:
  - {name: mgmt, cidrs: [198.18.1.0/24], labels: {zone: mgmt}}
  - {name: jump, cidrs: [198.18.1.5/32], labels: {role: jump}}
segments:
  - name: s
    rules:
      - {name: no-mgmt, action: deny, from: {zone: mgmt}, to: {tier: web},
         protocol: tcp, ports: [443]}
      - {name: jump-in, from: {role: jump}, to: {tier: web}, protocol: tcp, ports: [443]}
)";
  ASSERT_TRUE(loadPolicyText(kText, "p.yaml", diagnostics_).ok()) << diagnostics_.format();

  EXPECT_THAT(warnings(),
              ElementsAre("p.yaml:10:45: warning: deny rule `s/no-mgmt` covers 198.18.1.0/24 of "
                          "`mgmt` but not 198.18.1.5/32 inside it, which is inventory entry "
                          "`jump` (an address takes the identity of its most specific prefix); "
                          "select `jump` too if it must be denied"));
}

TEST_F(PolicyCompilerTest, NoWarningWhenTheDenySelectsTheNarrowerEntryToo) {
  constexpr const char* kText = R"(version: 1
workloads:
  - {name: web, cgroup: web.service, labels: {tier: web}}
inventory:
  - {name: mgmt, cidrs: [198.18.1.0/24], labels: {zone: mgmt}}
  - {name: jump, cidrs: [198.18.1.5/32], labels: {zone: mgmt, role: jump}}
segments:
  - name: s
    rules:
      - {name: no-mgmt, action: deny, from: {zone: mgmt}, to: {tier: web},
         protocol: tcp, ports: [443]}
)";
  ASSERT_TRUE(loadPolicyText(kText, "p.yaml", diagnostics_).ok()) << diagnostics_.format();

  EXPECT_THAT(warnings(), IsEmpty());
}

TEST_F(PolicyCompilerTest, WarnsAboutAnAllowWhollyShadowedByADeny) {
  compile(R"(    rules:
      - {name: pg, from: {tier: web}, to: {tier: db}, protocol: tcp, ports: [5432]}
      - {name: tcp, from: {tier: web}, to: {tier: db}, protocol: tcp}
      - {name: no-db, action: deny, from: {tier: web}, to: {tier: db}, protocol: tcp,
         ports: [5000-5999]}
)");

  EXPECT_THAT(warnings(), ElementsAre("p.yaml:22:9: warning: rule `shop/pg` is wholly shadowed by "
                                      "deny rule `shop/no-db`; it never allows anything"));
}

TEST_F(PolicyCompilerTest, WarnsAboutAnAllowShadowedByADenyOnTheAnyPeer) {
  compile(R"(    rules:
      - {name: pg, from: {tier: web}, to: {tier: db}, protocol: tcp, ports: [5432]}
      - {name: lockdown, action: deny, mode: audit, from: {tier: web}, to: any}
      - {name: lockdown-in, action: deny, from: any, to: {tier: db}, protocol: tcp}
)");

  EXPECT_THAT(warnings(), ElementsAre("p.yaml:22:9: warning: rule `shop/pg` is wholly shadowed by "
                                      "deny rules `shop/lockdown`, `shop/lockdown-in`; it never "
                                      "allows anything"));
}

TEST_F(PolicyCompilerTest, DoesNotWarnAboutAnAllowOnlyPartlyDenied) {
  compile(R"(    rules:
      - {name: pg, from: {tier: web}, to: {tier: db}, protocol: tcp, ports: [5432, 80]}
      - {name: no-pg, action: deny, from: {tier: web}, to: {tier: db}, protocol: tcp,
         ports: [5432]}
      - {name: out, from: {tier: web}, to: any}
      - {name: no-db-in, action: deny, from: any, to: {tier: db}}
)");

  EXPECT_THAT(warnings(), IsEmpty());
}

TEST_F(PolicyCompilerTest, CompilesTheShippedExampleWithoutWarnings) {
  Diagnostics out;

  auto policy = loadPolicyFile(std::string(MSEG_EXAMPLES_DIR) + "/erp-crm.yaml", out);

  ASSERT_TRUE(policy.ok()) << out.format();
  EXPECT_THAT(out.all(), IsEmpty()) << out.format();
  EXPECT_EQ(policy->workloads.size(), 4u);
  EXPECT_EQ(policy->peers.size(), 7u);
  EXPECT_EQ(policy->prefixes.size(), 13u);
  EXPECT_EQ(policy->rules.size(), 10u);
  EXPECT_FALSE(policy->entries.empty());
  EXPECT_TRUE(std::is_sorted(policy->entries.begin(), policy->entries.end(),
                             [](const VerdictEntry& a, const VerdictEntry& b) {
                               return std::tie(a.direction, a.workload_id, a.peer_id, a.protocol,
                                               a.port, a.port_prefix_len) <
                                      std::tie(b.direction, b.workload_id, b.peer_id, b.protocol,
                                               b.port, b.port_prefix_len);
                             }));
}

TEST_F(PolicyCompilerTest, FailsToLoadAMissingFileWithItsErrno) {
  Diagnostics out;

  auto policy = loadPolicyFile("/nonexistent/policy.yaml", out);

  ASSERT_FALSE(policy.ok());
  EXPECT_EQ(policy.error().code(), ENOENT);
  EXPECT_EQ(policy.error().message(),
            "load policy: open /nonexistent/policy.yaml: No such file or directory");
}

TEST_F(PolicyCompilerTest, ReportsErrorsOfAFileWithItsPath) {
  Diagnostics out;
  std::string path = std::string(MSEG_POLICY_TEST_DATA_DIR) + "/bad-selector.yaml";

  auto policy = loadPolicyFile(path, out);

  ASSERT_FALSE(policy.ok());
  EXPECT_EQ(policy.error().message(), path + ": 2 errors");
  EXPECT_EQ(out.format(), path +
                              ":14:16: error: label key `tierr` is defined by no workload or "
                              "inventory entry; the selector can never match\n" +
                              path +
                              ":15:13: error: empty selector; write `any` to mean every "
                              "peer\n");
}

TEST_F(PolicyCompilerTest, ReportsASyntaxErrorOfAFileWithItsPath) {
  Diagnostics out;
  std::string path = std::string(MSEG_POLICY_TEST_DATA_DIR) + "/syntax-error.yaml";

  auto policy = loadPolicyFile(path, out);

  ASSERT_FALSE(policy.ok());
  EXPECT_EQ(policy.error().message(), path + ": 1 error");
  ASSERT_EQ(out.all().size(), 1u);
  EXPECT_EQ(out.all()[0].position.line, 6u);
  EXPECT_EQ(out.all()[0].source, path);
}

}  // namespace
}  // namespace mseg::policy
