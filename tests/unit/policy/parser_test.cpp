// Validation of policy files: every error the parser reports, at its exact line and column.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "mseg/policy/compiler.hpp"

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "mseg/policy/policy.hpp"

namespace mseg::policy {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::IsEmpty;

class PolicyParserTest : public ::testing::Test {
protected:
  // Parses `text` as "p.yaml" and returns the diagnostics as the user reads them.
  std::vector<std::string> problems(std::string_view text) {
    diagnostics_ = Diagnostics();
    result_ok_ = parsePolicy(text, "p.yaml", diagnostics_).ok();
    std::vector<std::string> lines;
    for (const auto& diagnostic : diagnostics_.all()) {
      lines.push_back(diagnostic.toString());
    }
    return lines;
  }

  // A valid policy with a workload `web` {app: web, tier: front}, an inventory entry `db`
  // {app: db}, and `rules` spliced in as the rules of segment `s` (indented by 6 spaces).
  static std::string withRules(std::string_view rules) {
    return std::string(
               "version: 1\n"                           // 1
               "workloads:\n"                           // 2
               "  - name: web\n"                        // 3
               "    cgroup: web.service\n"              // 4
               "    labels: {app: web, tier: front}\n"  // 5
               "inventory:\n"                           // 6
               "  - name: db\n"                         // 7
               "    cidrs: [198.18.0.10]\n"             // 8
               "    labels: {app: db}\n"                // 9
               "segments:\n"                            // 10
               "  - name: s\n"                          // 11
               "    rules:\n") +                        // 12
           std::string(rules);                          // from line 13
  }

  Diagnostics diagnostics_;
  bool result_ok_ = false;
};

TEST_F(PolicyParserTest, ParsesTheExamplePolicyWithoutProblems) {
  Diagnostics out;

  auto policy = parsePolicy(R"(version: 1
workloads:
  - name: erp-db
    cgroup: system.slice/postgresql.service
    labels: {app: erp, tier: db}
inventory:
  - name: erp-db-hosts
    cidrs: [198.18.0.10/32, "fd00:6d73::10/128"]
    labels: {app: erp, tier: db}
segments:
  - name: erp-core
    rules:
      - name: app-to-db
        from: {app: erp}
        to: {tier: db}
        protocol: tcp
        ports: [5432, 9100-9199]
)",
                            "inline.yaml", out);

  ASSERT_TRUE(policy.ok()) << out.format();
  EXPECT_THAT(out.all(), IsEmpty());
  ASSERT_EQ(policy->segments.size(), 1u);
  const RuleSpec& rule = policy->segments[0]->rules.at(0);
  EXPECT_EQ(rule.name, "app-to-db");
  EXPECT_EQ(rule.position.line, 13u);
  EXPECT_EQ(rule.position.column, 9u);
  EXPECT_EQ(rule.protocol, Protocol::Tcp);
  ASSERT_EQ(rule.ports.size(), 2u);
  EXPECT_EQ(rule.ports[1].first, 9100);
  EXPECT_EQ(rule.ports[1].last, 9199);
  EXPECT_EQ(policy->inventory[0].cidrs[0].cidr.prefix_len, 128);
  EXPECT_EQ(policy->inventory[0].cidrs[1].cidr.prefix_len, 128);
}

TEST_F(PolicyParserTest, ParsesTheShippedExampleFile) {
  std::string path = std::string(MSEG_EXAMPLES_DIR) + "/erp-crm.yaml";
  std::ifstream file(path);
  ASSERT_TRUE(file) << path;
  std::stringstream text;
  text << file.rdbuf();
  Diagnostics out;

  auto policy = parsePolicy(text.str(), path, out);

  ASSERT_TRUE(policy.ok()) << out.format();
  EXPECT_THAT(out.all(), IsEmpty()) << out.format();
  EXPECT_EQ(policy->workloads.size(), 4u);
  EXPECT_EQ(policy->inventory.size(), 7u);
  EXPECT_EQ(policy->segments.size(), 4u);
  EXPECT_EQ(policy->segments[2]->mode, Mode::Audit);
  EXPECT_EQ(policy->segments[0]->rules[2].name, "no-web-to-db");
  EXPECT_EQ(policy->segments[0]->rules[2].action, Action::Deny);
  EXPECT_EQ(policy->segments[2]->rules[2].name, "sync-dns");
  EXPECT_EQ(policy->segments[2]->rules[2].to.kind, SelectorKind::World);
  EXPECT_EQ(policy->content_hash, sha256Hex(text.str()));
}

TEST_F(PolicyParserTest, HashesThePolicyTextWithSha256) {
  EXPECT_EQ(sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_F(PolicyParserTest, CountsErrorsInTheFailedResult) {
  Diagnostics out;

  auto policy = parsePolicy("version: 2\ncolour: red\n", "p.yaml", out);

  ASSERT_FALSE(policy.ok());
  EXPECT_EQ(policy.error().message(), "p.yaml: 2 errors");
  EXPECT_EQ(policy.error().code(), EINVAL);
}

TEST_F(PolicyParserTest, ReportsYamlSyntaxErrorAtTheProblemMark) {
  auto lines = problems("version: 1\nworkloads:\n  - name: a\n   cgroup: x\n");

  EXPECT_THAT(lines, ElementsAre("p.yaml:4:4: error: invalid YAML: did not find expected '-' "
                                 "indicator (while parsing a block collection at 3:3)"));
  EXPECT_FALSE(result_ok_);
}

TEST_F(PolicyParserTest, ReportsUnclosedFlowMappingWithItsContext) {
  auto lines = problems("version: 1\nworkloads:\n  - name: a\n    labels: {app: x\n");

  ASSERT_EQ(lines.size(), 1u);
  EXPECT_THAT(lines[0], ::testing::StartsWith("p.yaml:5:1: error: invalid YAML: did not find "
                                              "expected ',' or '}' (while parsing a flow "
                                              "mapping at 4:13)"));
}

TEST_F(PolicyParserTest, ReportsDuplicateKeysWithTheFirstPlace) {
  auto lines = problems("version: 1\nsegments: []\nversion: 1\n");

  EXPECT_THAT(lines, ElementsAre("p.yaml:3:1: error: duplicate key `version`; it is first "
                                 "defined at 1:1"));
}

TEST_F(PolicyParserTest, ReportsDuplicateKeysInsideARule) {
  auto lines =
      problems(withRules("      - name: r\n"
                         "        from: {app: web}\n"
                         "        to: any\n"
                         "        from: {app: db}\n"));

  EXPECT_THAT(lines, ElementsAre("p.yaml:16:9: error: duplicate key `from`; it is first defined "
                                 "at 14:9"));
}

TEST_F(PolicyParserTest, ReportsUnsupportedVersion) {
  auto lines = problems("version: 2\n");

  EXPECT_THAT(lines, ElementsAre("p.yaml:1:10: error: unsupported policy version 2; this agent "
                                 "reads version 1"));
}

TEST_F(PolicyParserTest, ReportsMissingVersion) {
  auto lines = problems("segments: []\n");

  EXPECT_THAT(lines, ElementsAre("p.yaml:1:1: error: the policy is missing required field "
                                 "`version`"));
}

TEST_F(PolicyParserTest, ReportsAPolicyThatIsNotAMapping) {
  auto lines = problems("- version: 1\n");

  EXPECT_THAT(lines, ElementsAre("p.yaml:1:1: error: a policy must be a mapping with `version`, "
                                 "`workloads`, `inventory` and `segments`, found a list"));
}

TEST_F(PolicyParserTest, ReportsAnEmptyFile) {
  auto lines = problems("");

  EXPECT_THAT(lines, ElementsAre("p.yaml:1:1: error: a policy must be a mapping with `version`, "
                                 "`workloads`, `inventory` and `segments`, found nothing (null)"));
}

TEST_F(PolicyParserTest, ReportsUnknownFieldsNamingTheAllowedOnes) {
  auto lines = problems("version: 1\ncolour: red\n");

  EXPECT_THAT(lines, ElementsAre("p.yaml:2:1: error: unknown field `colour` in the policy; "
                                 "allowed fields: version, workloads, inventory, segments"));
}

TEST_F(PolicyParserTest, SuggestsTheFieldMeantByAnUnknownRuleField) {
  auto lines =
      problems(withRules("      - name: r\n"
                         "        from: {app: web}\n"
                         "        to: any\n"
                         "        protocol: tcp\n"
                         "        port: [80]\n"));

  EXPECT_THAT(lines, ElementsAre("p.yaml:17:9: error: unknown field `port` in rule; allowed "
                                 "fields: name, action, mode, from, to, protocol, ports, "
                                 "icmp-types (did you mean `ports`?)"));
}

TEST_F(PolicyParserTest, ReportsUnknownFieldsInEverySection) {
  auto lines = problems(
      "version: 1\n"
      "workloads:\n"
      "  - name: a\n"
      "    cgroup: a.service\n"
      "    uid: 5\n"
      "inventory:\n"
      "  - name: b\n"
      "    cidrs: [198.18.0.1]\n"
      "    cidr: 198.18.0.2\n"
      "segments:\n"
      "  - name: s\n"
      "    rules: []\n"
      "    description: x\n");

  EXPECT_THAT(lines, ElementsAre("p.yaml:5:5: error: unknown field `uid` in workload; allowed "
                                 "fields: name, cgroup, cgroups, user, users, labels",
                                 "p.yaml:9:5: error: unknown field `cidr` in inventory entry; "
                                 "allowed fields: name, cidrs, labels (did you mean `cidrs`?)",
                                 "p.yaml:13:5: error: unknown field `description` in segment; "
                                 "allowed fields: name, mode, rules"));
}

TEST_F(PolicyParserTest, ReportsWrongTypes) {
  auto lines = problems(
      "version: one\n"
      "workloads: {a: b}\n"
      "inventory:\n"
      "  - just-a-string\n"
      "  - name: x\n"
      "    cidrs: [198.18.0.1]\n"
      "    labels: [a, b]\n"
      "segments:\n"
      "  - name: [s]\n"
      "    rules: {}\n");

  EXPECT_THAT(lines, ElementsAre("p.yaml:1:10: error: expected a number for `version`, found a "
                                 "string",
                                 "p.yaml:2:12: error: expected a list for `workloads`, found a "
                                 "mapping",
                                 "p.yaml:4:5: error: expected a mapping for an item of "
                                 "`inventory`, found a string",
                                 "p.yaml:7:13: error: expected a mapping for `labels`, found a "
                                 "list",
                                 "p.yaml:9:11: error: expected a string for `name`, found a list",
                                 "p.yaml:10:12: error: expected a list for `rules`, found a "
                                 "mapping"));
}

TEST_F(PolicyParserTest, ReportsMissingRequiredFields) {
  auto lines = problems(
      "version: 1\n"
      "workloads:\n"
      "  - cgroup: a.service\n"
      "inventory:\n"
      "  - name: b\n"
      "segments:\n"
      "  - name: s\n"
      "  - name: t\n"
      "    rules:\n"
      "      - name: r\n"
      "        from: any\n");

  EXPECT_THAT(lines, ElementsAre("p.yaml:3:5: error: a workload is missing required field `name`",
                                 "p.yaml:5:5: error: an inventory entry is missing required field "
                                 "`cidrs`",
                                 "p.yaml:7:5: error: a segment is missing required field `rules`",
                                 "p.yaml:10:9: error: a rule is missing required field `to`"));
}

TEST_F(PolicyParserTest, ReportsAWorkloadWithoutCgroupOrUser) {
  auto lines = problems("version: 1\nworkloads:\n  - name: a\n    labels: {app: a}\n");

  EXPECT_THAT(lines, ElementsAre("p.yaml:3:5: error: a workload needs `cgroup`, `cgroups`, `user` "
                                 "or `users`; without any it would select every process"));
}

TEST_F(PolicyParserTest, ReportsBothSpellingsOfOneField) {
  auto lines = problems(
      "version: 1\n"
      "workloads:\n"
      "  - name: a\n"
      "    cgroups: [a.service]\n"
      "    cgroup: b.service\n"
      "    user: root\n"
      "    users: [daemon]\n");

  EXPECT_THAT(lines, ElementsAre("p.yaml:5:5: error: give either `cgroup` or `cgroups`, not both",
                                 "p.yaml:7:5: error: give either `user` or `users`, not both"));
}

TEST_F(PolicyParserTest, ReportsTheLaterSpellingOnOneLine) {
  auto lines = problems("version: 1\n"
                        "workloads:\n"
                        "  - {name: a, cgroup: a.service, cgroups: [b.service]}\n");

  EXPECT_THAT(lines,
              ElementsAre("p.yaml:3:34: error: give either `cgroup` or `cgroups`, not both"));
}

TEST_F(PolicyParserTest, ReportsAbsoluteAndEscapingCgroupPaths) {
  auto lines = problems(
      "version: 1\n"
      "workloads:\n"
      "  - name: a\n"
      "    cgroups: [/system.slice/a.service, ../b, c//d]\n");

  EXPECT_THAT(lines, ElementsAre("p.yaml:4:15: error: cgroup `/system.slice/a.service` must be a "
                                 "path relative to the agent's cgroup, such as "
                                 "system.slice/nginx.service",
                                 "p.yaml:4:40: error: cgroup `../b` must be a path relative to "
                                 "the agent's cgroup, such as system.slice/nginx.service",
                                 "p.yaml:4:46: error: cgroup `c//d` must be a path relative to "
                                 "the agent's cgroup, such as system.slice/nginx.service"));
}

TEST_F(PolicyParserTest, ReportsAnEmptyList) {
  auto lines = problems("version: 1\nworkloads:\n  - name: a\n    cgroups: []\n");

  EXPECT_THAT(lines, ElementsAre("p.yaml:4:14: error: `cgroups` is an empty list; leave the "
                                 "field out instead"));
}

TEST_F(PolicyParserTest, ReportsUidOutOfRange) {
  auto lines = problems("version: 1\nworkloads:\n  - name: a\n    users: [0, 4294967295]\n");

  EXPECT_THAT(lines, ElementsAre("p.yaml:4:16: error: uid 4294967295 is out of range "
                                 "0-4294967294"));
}

TEST_F(PolicyParserTest, ReportsDuplicateNames) {
  auto lines = problems(
      "version: 1\n"
      "workloads:\n"
      "  - {name: a, cgroup: a.service}\n"
      "  - {name: a, cgroup: b.service}\n"
      "inventory:\n"
      "  - {name: h, cidrs: [198.18.0.1]}\n"
      "  - {name: h, cidrs: [198.18.0.2]}\n"
      "segments:\n"
      "  - {name: s, rules: []}\n"
      "  - name: s\n"
      "    rules:\n"
      "      - {name: r, from: any, to: any}\n"
      "      - {name: r, from: any, to: any}\n");

  EXPECT_THAT(lines, ElementsAre("p.yaml:4:12: error: duplicate workload name `a`; it is first "
                                 "defined at 3:12",
                                 "p.yaml:7:12: error: duplicate inventory entry name `h`; it is "
                                 "first defined at 6:12",
                                 "p.yaml:13:16: error: duplicate rule name `r` in segment `s`; it "
                                 "is first defined at 12:16",
                                 "p.yaml:10:11: error: duplicate segment name `s`; it is first "
                                 "defined at 9:12"));
}

TEST_F(PolicyParserTest, AllowsTheSameRuleNameInTwoSegments) {
  auto lines = problems(
      "version: 1\n"
      "segments:\n"
      "  - {name: s, rules: [{name: r, from: any, to: any}]}\n"
      "  - {name: t, rules: [{name: r, from: any, to: any}]}\n");

  EXPECT_THAT(lines, IsEmpty());
}

TEST_F(PolicyParserTest, ReportsInvalidNames) {
  auto lines = problems("version: 1\nsegments:\n  - {name: a/b, rules: []}\n");

  EXPECT_THAT(lines, ElementsAre("p.yaml:3:12: error: invalid segment name `a/b`; use letters, "
                                 "digits, `-`, `_` and `.`"));
}

TEST_F(PolicyParserTest, RefusesInvisibleCharactersInNamesAndLabelsNamingTheCodePoint) {
  auto lines = problems(
      "version: 1\n"
      "workloads:\n"
      "  - {name: \"app\u200b\", cgroup: a.service, labels: {role: app}}\n"
      "  - {name: db, cgroup: d.service, labels: {role: \"d\u202eb\", \"ti\u2060er\": x}}\n"
      "segments:\n"
      "  - {name: s, rules: [{name: r, from: {role: \"app\ufeff\"}, to: any}]}\n");

  EXPECT_THAT(lines,
              ElementsAre("p.yaml:3:12: error: workload name `app\\u{200B}` contains the invisible "
                          "character U+200B; remove it (zero-width, bidirectional and control "
                          "characters are not allowed)",
                          "p.yaml:4:50: error: label `role` `d\\u{202E}b` contains the invisible "
                          "character U+202E; remove it (zero-width, bidirectional and control "
                          "characters are not allowed)",
                          "p.yaml:4:57: error: label key `ti\\u{2060}er` contains the invisible "
                          "character U+2060; remove it (zero-width, bidirectional and control "
                          "characters are not allowed)",
                          "p.yaml:6:46: error: label `role` `app\\u{FEFF}` contains the invisible "
                          "character U+FEFF; remove it (zero-width, bidirectional and control "
                          "characters are not allowed)",
                          // Both workloads lost their `role` label to the errors above.
                          "p.yaml:6:40: error: label key `role` is defined by no workload or "
                          "inventory entry; the selector can never match"));
}

TEST_F(PolicyParserTest, ReportsBadCidrsAndNamesTheNetworkForHostBits) {
  auto lines = problems(
      "version: 1\n"
      "inventory:\n"
      "  - name: h\n"
      "    cidrs: [198.18.0.1/24, \"fd00::1/64\", 10.0.0.0/33, banana]\n");

  EXPECT_THAT(lines, ElementsAre("p.yaml:4:13: error: CIDR `198.18.0.1/24` has host bits set; "
                                 "the network is 198.18.0.0/24",
                                 "p.yaml:4:28: error: CIDR `fd00::1/64` has host bits set; the "
                                 "network is fd00::/64",
                                 "p.yaml:4:42: error: `10.0.0.0/33` is not a CIDR: the prefix "
                                 "length must be 0 to 32",
                                 "p.yaml:4:55: error: `banana` is not a CIDR: `banana` is not an "
                                 "IP address"));
}

TEST_F(PolicyParserTest, ReportsTheSameCidrInTwoEntries) {
  auto lines = problems(
      "version: 1\n"
      "inventory:\n"
      "  - {name: a, cidrs: [198.18.0.0/24]}\n"
      "  - {name: b, cidrs: [10.0.0.1, 198.18.0.0/24]}\n");

  EXPECT_THAT(lines, ElementsAre("p.yaml:4:33: error: CIDR 198.18.0.0/24 is already listed by "
                                 "inventory entry `a` at 3:23"));
}

TEST_F(PolicyParserTest, AllowsNestedCidrsInDifferentEntries) {
  auto lines = problems(
      "version: 1\n"
      "inventory:\n"
      "  - {name: a, cidrs: [198.18.0.0/24]}\n"
      "  - {name: b, cidrs: [198.18.0.10]}\n");

  EXPECT_THAT(lines, IsEmpty());
}

TEST_F(PolicyParserTest, ReportsBadModeActionAndProtocolValues) {
  auto lines =
      problems(withRules("      - name: r\n"
                         "        action: permit\n"
                         "        mode: strict\n"
                         "        from: {app: web}\n"
                         "        to: any\n"
                         "        protocol: sctp\n"));

  EXPECT_THAT(lines, ElementsAre("p.yaml:14:17: error: invalid action `permit`; expected one of: "
                                 "allow, deny",
                                 "p.yaml:15:15: error: invalid mode `strict`; expected one of: "
                                 "enforce, audit",
                                 "p.yaml:18:19: error: invalid protocol `sctp`; expected one of: "
                                 "tcp, udp, icmp, icmpv6, any"));
}

TEST_F(PolicyParserTest, ReportsPortsOutOfRangeAndReversedRanges) {
  auto lines =
      problems(withRules("      - name: r\n"
                         "        from: {app: web}\n"
                         "        to: any\n"
                         "        protocol: tcp\n"
                         "        ports: [0, 65536, 9199-9100, http, \"80\", 1-65535]\n"));

  EXPECT_THAT(lines, ElementsAre("p.yaml:17:17: error: port 0 is out of range 1-65535",
                                 "p.yaml:17:20: error: port 65536 is out of range 1-65535",
                                 "p.yaml:17:27: error: port range 9199-9100 is reversed; write "
                                 "9100-9199",
                                 "p.yaml:17:38: error: `http` is not a port; write a number "
                                 "1-65535 or a range such as 9100-9199"));
}

TEST_F(PolicyParserTest, AcceptsASinglePortWithoutAList) {
  Diagnostics out;

  auto policy = parsePolicy(withRules("      - name: r\n"
                                      "        from: {app: web}\n"
                                      "        to: any\n"
                                      "        protocol: udp\n"
                                      "        ports: 53\n"),
                            "p.yaml", out);

  ASSERT_TRUE(policy.ok()) << out.format();
  const RuleSpec& rule = policy->segments[0]->rules[0];
  ASSERT_EQ(rule.ports.size(), 1u);
  EXPECT_EQ(rule.ports[0].first, 53);
  EXPECT_EQ(rule.ports[0].last, 53);
}

TEST_F(PolicyParserTest, ReportsPortsOnIcmpAndAny) {
  auto lines =
      problems(withRules("      - name: r\n"
                         "        from: {app: web}\n"
                         "        to: any\n"
                         "        ports: [80]\n"
                         "      - name: q\n"
                         "        from: {app: web}\n"
                         "        to: any\n"
                         "        protocol: icmp\n"
                         "        ports: [80]\n"));

  EXPECT_THAT(lines, ElementsAre("p.yaml:16:9: error: `ports` needs protocol tcp or udp; this "
                                 "rule's protocol is `any`",
                                 "p.yaml:21:9: error: `ports` needs protocol tcp or udp; this "
                                 "rule's protocol is `icmp`"));
}

TEST_F(PolicyParserTest, ReportsIcmpTypesOnTcpAndOutOfRange) {
  auto lines =
      problems(withRules("      - name: r\n"
                         "        from: {app: web}\n"
                         "        to: any\n"
                         "        protocol: tcp\n"
                         "        icmp-types: [8]\n"
                         "      - name: q\n"
                         "        from: {app: web}\n"
                         "        to: any\n"
                         "        protocol: icmpv6\n"
                         "        icmp-types: [128, 256, echo]\n"));

  EXPECT_THAT(lines, ElementsAre("p.yaml:17:9: error: `icmp-types` needs protocol icmp or icmpv6; "
                                 "this rule's protocol is `tcp`",
                                 "p.yaml:22:27: error: ICMP type 256 is out of range 0-255",
                                 "p.yaml:22:32: error: `echo` is not an ICMP type; write a number "
                                 "0-255"));
}

TEST_F(PolicyParserTest, ReportsAnEmptySelector) {
  auto lines =
      problems(withRules("      - name: r\n"
                         "        from: {app: web}\n"
                         "        to: {}\n"));

  EXPECT_THAT(lines, ElementsAre("p.yaml:15:13: error: empty selector; write `any` to mean every "
                                 "peer"));
}

TEST_F(PolicyParserTest, ReportsASelectorThatIsNeitherLabelsNorAnyNorWorld) {
  auto lines =
      problems(withRules("      - name: r\n"
                         "        from: everyone\n"
                         "        to: [any]\n"));

  EXPECT_THAT(lines, ElementsAre("p.yaml:14:15: error: invalid selector for `from`: expected a "
                                 "label mapping such as {app: erp}, `any` or `world`, found "
                                 "`everyone`",
                                 "p.yaml:15:13: error: invalid selector for `to`: expected a label "
                                 "mapping such as {app: erp}, `any` or `world`, found a list"));
}

TEST_F(PolicyParserTest, ReportsASelectorKeyNobodyDefines) {
  auto lines =
      problems(withRules("      - name: r\n"
                         "        from: {tierr: front}\n"
                         "        to: {app: db}\n"));

  EXPECT_THAT(lines, ElementsAre("p.yaml:14:16: error: label key `tierr` is defined by no "
                                 "workload or inventory entry; the selector can never match"));
}

TEST_F(PolicyParserTest, ReportsASelectorValueListThatIsEmpty) {
  auto lines =
      problems(withRules("      - name: r\n"
                         "        from: {tier: []}\n"
                         "        to: {app: db}\n"));

  EXPECT_THAT(lines, ElementsAre("p.yaml:14:22: error: `tier` is an empty list; leave the field "
                                 "out instead"));
}

TEST_F(PolicyParserTest, ParsesSelectorsWithValueLists) {
  Diagnostics out;

  auto policy = parsePolicy(withRules("      - name: r\n"
                                      "        from: {app: [web, api], tier: front}\n"
                                      "        to: world\n"),
                            "p.yaml", out);

  ASSERT_TRUE(policy.ok()) << out.format();
  const Selector& from = policy->segments[0]->rules[0].from;
  ASSERT_EQ(from.requirements.size(), 2u);
  EXPECT_EQ(from.requirements[0].key, "app");
  EXPECT_THAT(from.requirements[0].values, ElementsAre("web", "api"));
  EXPECT_TRUE(selectorMatches(from, {{"app", "api"}, {"tier", "front"}, {"env", "prod"}}));
  EXPECT_FALSE(selectorMatches(from, {{"app", "db"}, {"tier", "front"}}));
  EXPECT_FALSE(selectorMatches(from, {{"app", "web"}}));
}

TEST_F(PolicyParserTest, AppliesDefaultsToOptionalFields) {
  Diagnostics out;

  auto policy = parsePolicy(withRules("      - name: r\n"
                                      "        from: {app: web}\n"
                                      "        to: any\n"),
                            "p.yaml", out);

  ASSERT_TRUE(policy.ok()) << out.format();
  EXPECT_EQ(policy->segments[0]->mode, Mode::Enforce);
  const RuleSpec& rule = policy->segments[0]->rules[0];
  EXPECT_EQ(rule.action, Action::Allow);
  EXPECT_FALSE(rule.mode.has_value());
  EXPECT_EQ(rule.protocol, Protocol::Any);
  EXPECT_THAT(rule.ports, IsEmpty());
  EXPECT_EQ(rule.to.kind, SelectorKind::Any);
}

TEST_F(PolicyParserTest, CollectsEveryErrorRatherThanTheFirst) {
  auto lines = problems(
      "version: 3\n"
      "workloads:\n"
      "  - name: a\n"
      "inventory:\n"
      "  - {name: h, cidrs: [1.2.3.4/8]}\n");

  EXPECT_EQ(lines.size(), 3u);
  EXPECT_THAT(lines, Contains("p.yaml:5:23: error: CIDR `1.2.3.4/8` has host bits set; the "
                              "network is 1.0.0.0/8"));
  EXPECT_EQ(diagnostics_.errorCount(), 3u);
}

}  // namespace
}  // namespace mseg::policy

namespace mseg::policy {
namespace {

TEST(HostileInputTest, ControlCharacterInCgroupPathIsRejected) {
  Diagnostics diagnostics;
  auto compiled = loadPolicyText(
      "version: 1\nworkloads:\n  - name: w\n    cgroup: \"\\0not-a-cgroup\"\n", "p.yaml",
      diagnostics);

  EXPECT_FALSE(compiled);
  EXPECT_NE(diagnostics.format().find("p.yaml:4:13: error: cgroup"), std::string::npos)
      << diagnostics.format();
}

TEST(HostileInputTest, NestingDeeperThan64LevelsIsRefused) {
  std::string text = "version: 1\nworkloads: " + std::string(100000, '[');
  Diagnostics diagnostics;

  auto compiled = loadPolicyText(text, "deep.yaml", diagnostics);

  EXPECT_FALSE(compiled);
  EXPECT_NE(diagnostics.format().find("deep.yaml:2:75: error: nested deeper than 64 levels"),
            std::string::npos)
      << diagnostics.format();
}

}  // namespace
}  // namespace mseg::policy
