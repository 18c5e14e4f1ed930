// diffPolicies(): which rules and which workload-to-peer paths change between two policies.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "mseg/policy/compiler.hpp"
#include "mseg/policy/diff.hpp"

namespace mseg::policy {
namespace {

// Two workloads and two inventory entries; tests edit the rules.
constexpr const char* kBase = R"(version: 1
workloads:
  - name: app
    cgroup: app.service
    labels: {role: app}
  - name: db
    cgroup: db.service
    labels: {role: db}
inventory:
  - name: db-hosts
    cidrs: [198.18.0.10/32]
    labels: {role: db}
  - name: app-hosts
    cidrs: [198.18.0.20/32]
    labels: {role: app}
segments:
  - name: core
    mode: enforce
    rules:
      - name: app-to-db
        from: {role: app}
        to: {role: db}
        protocol: tcp
        ports: [5432]
)";

CompiledPolicy compile(const std::string& text) {
  Diagnostics out;
  auto compiled = loadPolicyText(text, "test.yaml", out);
  EXPECT_TRUE(compiled.ok()) << out.format();
  return compiled.ok() ? std::move(compiled).value() : CompiledPolicy{};
}

std::string withRules(const std::string& rules) { return std::string(kBase) + rules; }

const PathChange* findPath(const PolicyDiff& diff, const std::string& workload,
                           Direction direction, const std::string& peer, PathProtocol protocol,
                           uint16_t first_port) {
  auto found = std::find_if(diff.paths.begin(), diff.paths.end(), [&](const PathChange& path) {
    return path.workload == workload && path.direction == direction && path.peer == peer &&
           path.protocol == protocol && path.first_port == first_port;
  });
  return found == diff.paths.end() ? nullptr : &*found;
}

TEST(PolicyDiffTest, SamePolicyHasNoChanges) {
  auto policy = compile(kBase);

  auto diff = diffPolicies(policy, policy);

  EXPECT_TRUE(diff.rules.empty());
  EXPECT_TRUE(diff.paths.empty());
}

TEST(PolicyDiffTest, ReformattedAndReorderedPolicyHasNoChanges) {
  std::string reordered = kBase;
  reordered.replace(reordered.find("        protocol: tcp\n        ports: [5432]"),
                    std::string("        protocol: tcp\n        ports: [5432]").size(),
                    "        ports: [ 5432 ]\n        protocol: tcp");

  auto diff = diffPolicies(compile(kBase), compile(reordered));

  EXPECT_TRUE(diff.rules.empty());
  EXPECT_TRUE(diff.paths.empty());
}

TEST(PolicyDiffTest, MovedPortClosesTheOldPathAndOpensTheNew) {
  std::string moved = kBase;
  moved.replace(moved.find("[5432]"), 6, "[5433]");

  auto diff = diffPolicies(compile(kBase), compile(moved));

  const PathChange* closed =
      findPath(diff, "app", Direction::Egress, "db-hosts", PathProtocol::Tcp, 5432);
  ASSERT_NE(closed, nullptr);
  EXPECT_TRUE(closed->closes());
  EXPECT_EQ(closed->last_port, 5432);
  EXPECT_EQ(closed->old_verdict, Verdict::Allow);
  EXPECT_EQ(closed->old_rule, "core/app-to-db");
  EXPECT_EQ(closed->new_rule, "(default deny)");
  const PathChange* opened =
      findPath(diff, "app", Direction::Egress, "db-hosts", PathProtocol::Tcp, 5433);
  ASSERT_NE(opened, nullptr);
  EXPECT_TRUE(opened->opens());
  EXPECT_NE(findPath(diff, "db", Direction::Ingress, "app-hosts", PathProtocol::Tcp, 5433),
            nullptr);
  ASSERT_EQ(diff.rules.size(), 1u);
  EXPECT_EQ(diff.rules[0].kind, RuleChange::Kind::Changed);
  EXPECT_EQ(diff.rules[0].rule, "core/app-to-db");
}

TEST(PolicyDiffTest, AddedRuleWithARangeOpensOnePathForTheWholeRange) {
  auto after = compile(withRules(R"(      - name: app-to-db-admin
        from: {role: app}
        to: {role: db}
        protocol: tcp
        ports: [9100-9199]
)"));

  auto diff = diffPolicies(compile(kBase), after);

  const PathChange* opened =
      findPath(diff, "app", Direction::Egress, "db-hosts", PathProtocol::Tcp, 9100);
  ASSERT_NE(opened, nullptr);
  EXPECT_EQ(opened->last_port, 9199);
  EXPECT_EQ(opened->new_rule, "core/app-to-db-admin");
  ASSERT_EQ(diff.rules.size(), 1u);
  EXPECT_EQ(diff.rules[0].kind, RuleChange::Kind::Added);
  EXPECT_EQ(diff.rules[0].new_verdict, Verdict::Allow);
  EXPECT_EQ(diff.rules[0].location, "test.yaml:25:9");
}

TEST(PolicyDiffTest, RemovedRuleLeavesTheWorkloadUnmanaged) {
  std::string without = kBase;
  without.erase(without.find("      - name: app-to-db"));
  without.replace(without.find("    rules:\n"), 11, "    rules: []\n");

  auto diff = diffPolicies(compile(kBase), compile(without));

  ASSERT_EQ(diff.rules.size(), 1u);
  EXPECT_EQ(diff.rules[0].kind, RuleChange::Kind::Removed);
  // Nothing manages app's egress any more: everything it was denied now passes unjudged.
  const PathChange* any = findPath(diff, "app", Direction::Egress, "any", PathProtocol::Any, 0);
  ASSERT_NE(any, nullptr);
  EXPECT_TRUE(any->opens());
  EXPECT_EQ(any->new_verdict, Verdict::None);
}

TEST(PolicyDiffTest, DenyRuleClosesEveryProtocolToItsPeer) {
  auto after = compile(withRules(R"(      - name: no-app-to-db
        action: deny
        from: {role: app}
        to: {role: db}
        protocol: any
)"));

  auto diff = diffPolicies(compile(kBase), after);

  const PathChange* closed =
      findPath(diff, "app", Direction::Egress, "db-hosts", PathProtocol::Tcp, 5432);
  ASSERT_NE(closed, nullptr);
  EXPECT_TRUE(closed->closes());
  EXPECT_EQ(closed->new_rule, "core/no-app-to-db");
  // The other ports were default-denied before: deny to deny is no change.
  EXPECT_EQ(findPath(diff, "app", Direction::Egress, "db-hosts", PathProtocol::Tcp, 0), nullptr);
  auto rule = std::find_if(diff.rules.begin(), diff.rules.end(),
                           [](const RuleChange& r) { return r.rule == "core/app-to-db"; });
  ASSERT_NE(rule, diff.rules.end());
  EXPECT_EQ(rule->kind, RuleChange::Kind::Changed);  // it no longer decides anything
}

TEST(PolicyDiffTest, SwitchingASegmentToAuditMakesItsDeniesReportOnly) {
  std::string audit = kBase;
  audit.replace(audit.find("mode: enforce"), 13, "mode: audit");

  auto diff = diffPolicies(compile(kBase), compile(audit));

  const PathChange* any = findPath(diff, "app", Direction::Egress, "any", PathProtocol::Any, 0);
  ASSERT_NE(any, nullptr);
  EXPECT_EQ(any->old_verdict, Verdict::Deny);
  EXPECT_EQ(any->new_verdict, Verdict::Audit);
  EXPECT_TRUE(any->opens());
  // Toward db-hosts, 5432 stays allowed: the changes stop short of it on both sides.
  const PathChange* below = findPath(diff, "app", Direction::Egress, "db-hosts",
                                     PathProtocol::Tcp, 0);
  ASSERT_NE(below, nullptr);
  EXPECT_EQ(below->last_port, 5431);
  EXPECT_EQ(findPath(diff, "app", Direction::Egress, "db-hosts", PathProtocol::Tcp, 5432),
            nullptr);
  EXPECT_NE(findPath(diff, "app", Direction::Egress, "db-hosts", PathProtocol::Tcp, 5433),
            nullptr);
}

// The restructuring an operator may try: one workload for every top-level cgroup.
constexpr const char* kEverything = R"(version: 1
workloads:
  - name: everything
    cgroup: "*"
    labels: {role: all}
inventory:
  - name: db-hosts
    cidrs: [198.18.0.10/32]
    labels: {role: db}
segments:
  - name: core
    rules:
      - name: all-to-db
        from: {role: all}
        to: {role: db}
        protocol: tcp
        ports: [5432]
)";

const CgroupChange* findCgroup(const PolicyDiff& diff, const std::string& cgroup) {
  auto found = std::find_if(diff.cgroups.begin(), diff.cgroups.end(),
                            [&](const CgroupChange& change) { return change.cgroup == cgroup; });
  return found == diff.cgroups.end() ? nullptr : &*found;
}

TEST(PolicyDiffTest, RemovedWorkloadsShowWhereTheirCgroupsGoInsteadOfOpenings) {
  const std::vector<std::string> cgroups = {"",           "app.service", "app.service/worker",
                                            "db.service", "ssh.service", "user.slice"};

  auto diff = diffPolicies(compile(withRules("")), compile(kEverything), cgroups);

  EXPECT_EQ(diff.removed_workloads, (std::vector<std::string>{"app", "db"}));
  for (const auto& path : diff.paths) {
    EXPECT_EQ(path.workload, "everything") << path.workload;
  }
  const CgroupChange* app = findCgroup(diff, "app.service");
  ASSERT_NE(app, nullptr);
  EXPECT_EQ(app->old_workload, "app");
  EXPECT_EQ(app->new_workload, "everything");
  EXPECT_EQ(app->cgroups_below, 1u);  // app.service/worker changes alike
  EXPECT_EQ(findCgroup(diff, "app.service/worker"), nullptr);
  // "*" also matches the empty path of the attach cgroup, as when the agent binds cgroups; the
  // unmanaged cgroups below it change alike and are folded into its line.
  const CgroupChange* root = findCgroup(diff, "");
  ASSERT_NE(root, nullptr);
  EXPECT_EQ(root->old_workload, "");
  EXPECT_EQ(root->new_workload, "everything");
  EXPECT_EQ(root->cgroups_below, 2u);  // ssh.service and user.slice
  EXPECT_EQ(findCgroup(diff, "ssh.service"), nullptr);
  EXPECT_EQ(diff.cgroups.size(), 3u);
}

TEST(PolicyDiffTest, CgroupBelowASelectedOneKeepsItsAncestorsWorkload) {
  std::string nested = withRules("");
  nested.replace(nested.find("cgroup: db.service"), 18, "cgroup: app.service/db");
  const std::vector<std::string> cgroups = {"app.service", "app.service/db", "app.service/db/x",
                                            "db.service"};

  auto diff = diffPolicies(compile(withRules("")), compile(nested), cgroups);

  EXPECT_TRUE(diff.removed_workloads.empty());
  const CgroupChange* moved = findCgroup(diff, "app.service/db");
  ASSERT_NE(moved, nullptr);
  EXPECT_EQ(moved->old_workload, "app");
  EXPECT_EQ(moved->new_workload, "db");
  EXPECT_EQ(moved->cgroups_below, 1u);
  const CgroupChange* left = findCgroup(diff, "db.service");
  ASSERT_NE(left, nullptr);
  EXPECT_EQ(left->new_workload, "");
  EXPECT_EQ(findCgroup(diff, "app.service"), nullptr);
}

TEST(PolicyDiffTest, UnmanagedWorkloadRemovedIsNoChange) {
  std::string spare = kBase;
  spare.replace(
      spare.find("inventory:"), 10,
      "  - name: spare\n    cgroup: spare.service\n    labels: {role: spare}\ninventory:");

  auto diff = diffPolicies(compile(spare), compile(kBase), {"spare.service"});

  EXPECT_TRUE(diff.removed_workloads.empty());
  EXPECT_TRUE(diff.paths.empty());
  ASSERT_EQ(diff.cgroups.size(), 1u);  // it is a fact about the host, if no verdict changes
  EXPECT_EQ(diff.cgroups[0].old_workload, "spare");
}

}  // namespace
}  // namespace mseg::policy
