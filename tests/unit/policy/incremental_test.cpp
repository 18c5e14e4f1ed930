// The change compiler must agree with the whole-policy compiler: the base policy's entries
// with a change applied are exactly the entries of the next policy compiled from scratch,
// verdicts, deciding rules and direction flags included. Checked on hand-written cases and on
// random policies with random edits.
#include "mseg/policy/incremental.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <map>
#include <set>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "mseg/policy/compiler.hpp"

namespace mseg::policy {
namespace {

// An entry's key fields, and what it says: verdict and the deciding rule's name.
using EntryKey = std::tuple<Direction, uint32_t, uint32_t, Protocol, uint16_t, uint8_t>;
using EntryValue = std::pair<Verdict, std::string>;
using EntryMap = std::map<EntryKey, EntryValue>;

EntryKey keyOf(const VerdictEntry& entry) {
  return {entry.direction, entry.workload_id, entry.peer_id,
          entry.protocol,  entry.port,        entry.port_prefix_len};
}

struct Flags {
  bool egress_managed, egress_audit, ingress_managed, ingress_audit;
  bool operator==(const Flags&) const = default;
};

Flags flagsOf(const CompiledWorkload& workload) {
  return {workload.egress_managed, workload.egress_audit, workload.ingress_managed,
          workload.ingress_audit};
}

std::string nameOf(const CompiledPolicy& policy, uint32_t rule_index) {
  return rule_index >= kFirstRuleIndex ? policy.rules.at(rule_index - kFirstRuleIndex).name
                                       : fmt::format("reserved {}", rule_index);
}

EntryMap entriesOf(const CompiledPolicy& policy) {
  EntryMap entries;
  for (const auto& entry : policy.entries) {
    entries[keyOf(entry)] = {entry.verdict, nameOf(policy, entry.rule_index)};
  }
  return entries;
}

class IncrementalCompileTest : public ::testing::Test {
protected:
  std::shared_ptr<const Policy> parse(const std::string& text) {
    Diagnostics diagnostics;
    auto policy = parsePolicy(text, "p.yaml", diagnostics);
    EXPECT_TRUE(policy.ok()) << diagnostics.format() << "\n" << text;
    return policy.ok() ? std::make_shared<const Policy>(std::move(policy).value()) : nullptr;
  }

  IndexedPolicy compileIndexedText(const std::string& text) {
    Diagnostics diagnostics;
    auto compiled = compileIndexed(parse(text), diagnostics);
    EXPECT_TRUE(compiled.ok()) << diagnostics.format();
    return std::move(compiled).value();
  }

  // The base's entries and flags with `change` applied, against `next` compiled in full.
  // Segments named in `unchanged` are taken from the base as the same objects, as PolicySource
  // does for files that did not change.
  void expectChangeMatchesFullCompile(const std::string& base_text, const std::string& next_text,
                                      const std::set<std::string>& unchanged = {}) {
    auto base_policy = parse(base_text);
    ASSERT_NE(base_policy, nullptr);
    Diagnostics base_diagnostics;
    auto indexed = compileIndexed(base_policy, base_diagnostics);
    ASSERT_TRUE(indexed.ok()) << base_diagnostics.format();
    IndexedPolicy& base = *indexed;
    auto parsed = parse(next_text);
    ASSERT_NE(parsed, nullptr);
    auto next = std::make_shared<Policy>(*parsed);
    for (auto& segment : next->segments) {
      for (const auto& before : base_policy->segments) {
        if (before->name == segment->name && unchanged.count(segment->name) != 0) {
          segment = before;
        }
      }
    }
    auto result = compileChange(*base.index, *next);
    ASSERT_TRUE(std::holds_alternative<CompiledChange>(result))
        << std::get<NotIncremental>(result).reason;
    const CompiledChange& change = std::get<CompiledChange>(result);

    std::map<uint32_t, std::string> added_names;
    for (const auto& rule : change.added_rules) {
      added_names[rule.index] = rule.name;
    }
    auto name_of = [&](uint32_t index) {
      auto added = added_names.find(index);
      return added != added_names.end() ? added->second : nameOf(base.compiled, index);
    };
    EntryMap patched = entriesOf(base.compiled);
    for (const auto& entry : change.removed) {
      ASSERT_EQ(patched.erase(keyOf(entry)), 1u) << "removed an entry the base does not have";
    }
    for (const auto& entry : change.upserted) {
      patched[keyOf(entry)] = {entry.verdict, name_of(entry.rule_index)};
    }

    Diagnostics diagnostics;
    auto full = compilePolicy(*next, diagnostics);
    ASSERT_TRUE(full.ok());
    EXPECT_EQ(patched, entriesOf(*full)) << "base:\n" << base_text << "\nnext:\n" << next_text;

    std::vector<CompiledWorkload> workloads = base.compiled.workloads;
    for (const auto& changed : change.changed_workloads) {
      workloads.at(changed.id - kFirstWorkloadIdentity) = changed;
    }
    for (size_t i = 0; i < workloads.size(); ++i) {
      EXPECT_EQ(flagsOf(workloads[i]), flagsOf(full->workloads[i])) << workloads[i].name;
    }
  }
};

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
    rules:
)";

std::string shop(std::string_view rules) {
  std::string text = std::string(kHeader) + std::string(rules);
  if (rules.empty()) {
    text.replace(text.rfind("rules:\n"), 7, "rules: []\n");
  }
  return text;
}

TEST_F(IncrementalCompileTest, APortChangeReplacesOnlyThatRulesEntries) {
  const std::string base = shop(R"(
      - {name: web-to-db, from: {tier: web}, to: {tier: db}, protocol: tcp, ports: [5432]}
      - {name: office-web, from: {zone: office}, to: {tier: web}, protocol: tcp, ports: [443]}
)");
  const std::string next = shop(R"(
      - {name: web-to-db, from: {tier: web}, to: {tier: db}, protocol: tcp, ports: [5433]}
      - {name: office-web, from: {zone: office}, to: {tier: web}, protocol: tcp, ports: [443]}
)");
  expectChangeMatchesFullCompile(base, next);

  IndexedPolicy indexed = compileIndexedText(base);
  auto result = compileChange(*indexed.index, *parse(next));
  const auto& change = std::get<CompiledChange>(result);
  // Egress of web and ingress of db each lose 5432 and gain 5433; office-web stays as it was.
  EXPECT_EQ(change.removed.size(), 2u);
  EXPECT_EQ(change.upserted.size(), 2u);
  ASSERT_EQ(change.added_rules.size(), 1u);
  EXPECT_EQ(change.added_rules[0].name, "shop/web-to-db");
  EXPECT_EQ(change.removed_rules.size(), 1u);
  EXPECT_TRUE(change.changed_workloads.empty());
}

TEST_F(IncrementalCompileTest, AnInsertedDenyTakesPrecedenceInTheRightPlace) {
  const std::string base = shop(R"(
      - {name: a, from: {tier: web}, to: {tier: db}, protocol: tcp, ports: [5432]}
      - {name: b, from: {tier: web}, to: {tier: db}, protocol: tcp, ports: ["5000-5999"]}
)");
  const std::string next = shop(R"(
      - {name: a, from: {tier: web}, to: {tier: db}, protocol: tcp, ports: [5432]}
      - {name: no-db, action: deny, from: {tier: web}, to: {tier: db}, protocol: tcp, ports: [5432]}
      - {name: c, from: {tier: web}, to: {tier: db}, protocol: tcp, ports: [5432]}
      - {name: b, from: {tier: web}, to: {tier: db}, protocol: tcp, ports: ["5000-5999"]}
)");
  expectChangeMatchesFullCompile(base, next);
  expectChangeMatchesFullCompile(next, base);
}

TEST_F(IncrementalCompileTest, ManagedDirectionsFollowTheRulesThatSelectThem) {
  const std::string base = shop(R"(
      - {name: a, from: {tier: web}, to: {tier: db}, protocol: tcp, ports: [5432]}
)");
  const std::string audit_only = R"(version: 1
workloads:
  - {name: web, cgroup: web.service, labels: {app: shop, tier: web}}
  - {name: db, cgroup: db.service, labels: {app: shop, tier: db}}
inventory:
  - {name: db-hosts, cidrs: [198.18.0.20], labels: {app: shop, tier: db}}
segments:
  - name: shop
    mode: audit
    rules:
      - {name: a, from: {tier: web}, to: {tier: db}, protocol: tcp, ports: [5432]}
)";
  const std::string enforcing = R"(version: 1
workloads:
  - {name: web, cgroup: web.service, labels: {app: shop, tier: web}}
  - {name: db, cgroup: db.service, labels: {app: shop, tier: db}}
inventory:
  - {name: db-hosts, cidrs: [198.18.0.20], labels: {app: shop, tier: db}}
segments:
  - name: shop
    rules:
      - {name: a, from: {tier: web}, to: {tier: db}, protocol: tcp, ports: [5432]}
)";
  expectChangeMatchesFullCompile(base, shop(""));
  expectChangeMatchesFullCompile(shop(""), base);
  expectChangeMatchesFullCompile(audit_only, enforcing);
  expectChangeMatchesFullCompile(enforcing, audit_only);
}

// Two changed segments with only an empty, unchanged segment between them: their new rules
// must still rank in file order (the first segment's rule is reported on a tie).
TEST_F(IncrementalCompileTest, NewRulesOfNeighbouringSegmentsKeepTheFileOrder) {
  auto policy = [](bool changed) {
    std::string text = std::string(kHeader);
    text.resize(text.find("segments:\n") + 10);
    text += "  - name: first\n    rules:\n";
    text += "      - {name: a, from: {tier: web}, to: {tier: db}, protocol: tcp, ports: [1]}\n";
    if (changed) {
      text += "      - {name: a2, from: {tier: web}, to: {tier: db}, protocol: tcp, ports: [80]}\n";
    }
    text += "  - name: empty\n    rules: []\n";
    text += "  - name: second\n    rules:\n";
    if (changed) {
      text += "      - {name: b2, from: {tier: web}, to: {tier: db}, protocol: tcp, ports: [80]}\n";
      text += "      - {name: b3, from: {tier: web}, to: {tier: db}, protocol: tcp, ports: [81]}\n";
    }
    text += "      - {name: b, from: {tier: web}, to: {tier: db}, protocol: tcp, ports: [2]}\n";
    return text;
  };
  expectChangeMatchesFullCompile(policy(false), policy(true), {"empty"});
}

TEST_F(IncrementalCompileTest, ChangedWorkloadsOrInventoryNeedAFullCompile) {
  const std::string base = shop("      - {name: a, from: {tier: web}, to: {tier: db}}\n");
  std::string next = base;
  next.replace(next.find("198.18.0.20"), 11, "198.18.0.21");
  IndexedPolicy indexed = compileIndexedText(base);
  auto result = compileChange(*indexed.index, *parse(next));
  ASSERT_TRUE(std::holds_alternative<NotIncremental>(result));
  EXPECT_EQ(std::get<NotIncremental>(result).reason, "inventory changed");
}

// Random policies over a few labels, so rules overlap a lot: any/world peers, port ranges that
// nest, ICMP types, deny and audit rules, segments in audit mode.
class RandomPolicies {
public:
  explicit RandomPolicies(uint32_t seed) : random_(seed) {}

  struct Rule {
    std::string text;  // the YAML flow mapping without the name
    std::string name;
  };
  struct Segment {
    std::string name;
    bool audit = false;
    std::vector<Rule> rules;
  };

  std::vector<Segment> segments() {
    std::vector<Segment> result;
    for (int s = 0, count = pick(1, 5); s < count; ++s) {
      Segment segment{fmt::format("s{}", s), pick(0, 3) == 0, {}};
      for (int r = 0, rules = pick(0, 8); r < rules; ++r) {
        segment.rules.push_back(rule());
      }
      result.push_back(std::move(segment));
    }
    return result;
  }

  Rule rule() { return {ruleBody(), fmt::format("r{}", next_name_++)}; }

  // One of: change a rule, insert one, delete one, move one, flip a segment's mode, add a
  // segment, remove one. Names the segments it changed in `changed`.
  void edit(std::vector<Segment>& segments, std::set<std::string>& changed) {
    const int at = pick(0, static_cast<int>(segments.size()) - 1);
    if (pick(0, 6) == 0) {
      Segment added{fmt::format("n{}", next_name_++), false, {rule(), rule()}};
      changed.insert(added.name);
      segments.insert(segments.begin() + at, std::move(added));
      return;
    }
    if (segments.size() > 1 && pick(0, 6) == 0) {
      changed.insert(segments[at].name);
      segments.erase(segments.begin() + at);
      return;
    }
    Segment& segment = segments[at];
    changed.insert(segment.name);
    const int rules = static_cast<int>(segment.rules.size());
    switch (pick(0, 4)) {
      case 0:
        if (rules > 0) {
          segment.rules[pick(0, rules - 1)].text = ruleBody();
          return;
        }
        [[fallthrough]];
      case 1:
        segment.rules.insert(segment.rules.begin() + pick(0, rules), rule());
        return;
      case 2:
        if (rules > 0) {
          segment.rules.erase(segment.rules.begin() + pick(0, rules - 1));
        }
        return;
      case 3:
        if (rules > 1) {
          auto moved = segment.rules[pick(0, rules - 1)];
          std::erase_if(segment.rules, [&](const Rule& r) { return r.name == moved.name; });
          segment.rules.insert(segment.rules.begin() + pick(0, rules - 1), moved);
        }
        return;
      default:
        segment.audit = !segment.audit;
    }
  }

  static std::string text(const std::vector<Segment>& segments) {
    std::string text = R"(version: 1
workloads:
  - {name: w1, cgroup: a.service, labels: {tier: web, zone: a}}
  - {name: w2, cgroup: b.service, labels: {tier: db, zone: a}}
  - {name: w3, cgroup: c.service, labels: {tier: web, zone: b}}
inventory:
  - {name: p1, cidrs: [198.18.0.1], labels: {tier: web, zone: a}}
  - {name: p2, cidrs: [198.18.0.2], labels: {tier: db, zone: b}}
  - {name: p3, cidrs: [198.18.1.0/24], labels: {tier: db, zone: a}}
segments:
)";
    for (const auto& segment : segments) {
      text += fmt::format("  - name: {}\n    mode: {}\n    rules:\n", segment.name,
                          segment.audit ? "audit" : "enforce");
      if (segment.rules.empty()) {
        text.resize(text.size() - 1);
        text += " []\n";
      }
      for (const auto& rule : segment.rules) {
        text += fmt::format("      - {{name: {}, {}}}\n", rule.name, rule.text);
      }
    }
    return text;
  }

private:
  int pick(int low, int high) { return std::uniform_int_distribution<int>(low, high)(random_); }

  std::string selector() {
    switch (pick(0, 5)) {
      case 0:
        return "any";
      case 1:
        return "world";
      case 2:
        return "{tier: web}";
      case 3:
        return "{tier: db}";
      case 4:
        return "{zone: a}";
      default:
        return "{tier: [web, db], zone: b}";
    }
  }

  std::string ruleBody() {
    std::string body = fmt::format("from: {}, to: {}", selector(), selector());
    if (pick(0, 2) == 0) {
      body += ", action: deny";
    }
    if (pick(0, 4) == 0) {
      body += fmt::format(", mode: {}", pick(0, 1) == 0 ? "audit" : "enforce");
    }
    switch (pick(0, 4)) {
      case 0:
        break;  // any protocol
      case 1:
        body += ", protocol: icmp, icmp-types: [8]";
        break;
      case 2:
        body += ", protocol: udp";
        break;
      default: {
        const int first = 5000 + pick(0, 40);
        body += fmt::format(", protocol: tcp, ports: [{}, \"{}-{}\"]", 5000 + pick(0, 40), first,
                            first + pick(0, 30));
      }
    }
    return body;
  }

  std::mt19937 random_;
  int next_name_ = 0;
};

TEST_F(IncrementalCompileTest, RandomEditsMatchAFullCompile) {
  for (uint32_t seed = 1; seed <= 300; ++seed) {
    RandomPolicies random(seed);
    auto segments = random.segments();
    const std::string base = RandomPolicies::text(segments);
    std::set<std::string> changed;
    for (int edits = 0; edits < 1 + static_cast<int>(seed % 3); ++edits) {
      random.edit(segments, changed);
    }
    std::set<std::string> unchanged;
    for (const auto& segment : segments) {
      if (changed.count(segment.name) == 0) {
        unchanged.insert(segment.name);
      }
    }
    SCOPED_TRACE(fmt::format("seed {}", seed));
    const std::string next = RandomPolicies::text(segments);
    expectChangeMatchesFullCompile(base, next);
    expectChangeMatchesFullCompile(base, next, unchanged);
    if (HasFatalFailure() || HasNonfatalFailure()) {
      return;
    }
  }
}

}  // namespace
}  // namespace mseg::policy
