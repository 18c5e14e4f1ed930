// A policy of several files: merged like one file, and the checks that span files.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "mseg/policy/compiler.hpp"
#include "mseg/policy/policy.hpp"

namespace mseg::policy {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

constexpr std::string_view kWorkloads = R"(version: 1
workloads:
  - name: web
    cgroup: web.service
    labels: {app: shop, tier: web}
  - name: db
    cgroup: db.service
    labels: {app: shop, tier: db}
)";

constexpr std::string_view kInventory = R"(version: 1
inventory:
  - name: db-hosts
    cidrs: [198.18.0.20, "fd00::20"]
    labels: {app: shop, tier: db}
  - name: office
    cidrs: [198.18.0.128/25]
    labels: {zone: office}
)";

constexpr std::string_view kShop = R"(version: 1
segments:
  - name: shop
    rules:
      - {name: web-to-db, from: {tier: web}, to: {tier: db}, protocol: tcp, ports: [5432]}
      - {name: no-office, action: deny, from: {zone: office}, to: {tier: db}}
)";

constexpr std::string_view kAdmin = R"(version: 1
segments:
  - name: admin
    mode: audit
    rules:
      - {name: office-ssh, from: {zone: office}, to: {app: shop}, protocol: tcp, ports: [22]}
)";

using Files = std::vector<std::shared_ptr<const PolicyFile>>;

class PolicyMergeTest : public ::testing::Test {
protected:
  // Parses `text` as the file `path`; the test fails if the file alone is not valid.
  std::shared_ptr<const PolicyFile> file(std::string_view path, std::string_view text) {
    auto parsed = parsePolicyFile(text, path, out_);
    EXPECT_TRUE(parsed.ok()) << out_.format();
    return parsed ? *parsed : std::make_shared<const PolicyFile>();
  }

  Files shopFiles() {
    return {file("d/10-workloads.yaml", kWorkloads), file("d/20-inventory.yaml", kInventory),
            file("d/30-shop.yaml", kShop), file("d/40-admin.yaml", kAdmin)};
  }

  std::vector<std::string> problems() {
    std::vector<std::string> lines;
    for (const auto* diagnostic : out_.sorted()) {
      lines.push_back(diagnostic->toString());
    }
    return lines;
  }

  Diagnostics out_;
};

// The texts of kWorkloads .. kAdmin as one file: the same rules in the same order.
std::string asOneFile() {
  return R"(version: 1
workloads:
  - name: web
    cgroup: web.service
    labels: {app: shop, tier: web}
  - name: db
    cgroup: db.service
    labels: {app: shop, tier: db}
inventory:
  - name: db-hosts
    cidrs: [198.18.0.20, "fd00::20"]
    labels: {app: shop, tier: db}
  - name: office
    cidrs: [198.18.0.128/25]
    labels: {zone: office}
segments:
  - name: shop
    rules:
      - {name: web-to-db, from: {tier: web}, to: {tier: db}, protocol: tcp, ports: [5432]}
      - {name: no-office, action: deny, from: {zone: office}, to: {tier: db}}
  - name: admin
    mode: audit
    rules:
      - {name: office-ssh, from: {zone: office}, to: {app: shop}, protocol: tcp, ports: [22]}
)";
}

bool sameEntries(const std::vector<VerdictEntry>& a, const std::vector<VerdictEntry>& b) {
  auto key = [](const VerdictEntry& e) {
    return std::tie(e.direction, e.workload_id, e.peer_id, e.protocol, e.port, e.port_prefix_len,
                    e.verdict, e.rule_index);
  };
  return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                    [&](const VerdictEntry& x, const VerdictEntry& y) { return key(x) == key(y); });
}

TEST_F(PolicyMergeTest, CompilesFilesMergedLikeTheSameRulesInOneFile) {
  auto merged = mergePolicyFiles(shopFiles(), "d", out_);
  Diagnostics single_out;
  auto single = parsePolicy(asOneFile(), "one.yaml", single_out);

  ASSERT_TRUE(merged.ok()) << out_.format();
  ASSERT_TRUE(single.ok()) << single_out.format();
  auto from_files = compilePolicy(*merged, out_);
  auto from_one = compilePolicy(*single, single_out);
  ASSERT_TRUE(from_files.ok()) << out_.format();
  ASSERT_TRUE(from_one.ok()) << single_out.format();
  EXPECT_FALSE(from_files->entries.empty());
  EXPECT_TRUE(sameEntries(from_files->entries, from_one->entries));
  ASSERT_EQ(from_files->rules.size(), from_one->rules.size());
  for (size_t i = 0; i < from_one->rules.size(); ++i) {
    EXPECT_EQ(from_files->rules[i].name, from_one->rules[i].name);
    EXPECT_EQ(from_files->rules[i].verdict, from_one->rules[i].verdict);
  }
  EXPECT_EQ(from_files->prefixes.size(), from_one->prefixes.size());
  EXPECT_EQ(from_files->workloads.size(), from_one->workloads.size());
}

TEST_F(PolicyMergeTest, KeepsFileOrderAndSharesTheParsedSegments) {
  Files files = shopFiles();

  auto merged = mergePolicyFiles(files, "d", out_);

  ASSERT_TRUE(merged.ok()) << out_.format();
  EXPECT_EQ(merged->source_name, "d");
  EXPECT_EQ(merged->files, files);
  ASSERT_EQ(merged->segments.size(), 2u);
  EXPECT_EQ(merged->segments[0], files[2]->segments[0]);
  EXPECT_EQ(merged->segments[1], files[3]->segments[0]);
  EXPECT_EQ(merged->workloads[1].name, "db");
  EXPECT_EQ(merged->inventory[1].name, "office");
}

TEST_F(PolicyMergeTest, NamesTheFileOfEachRuleAndWarning) {
  Files files = {file("d/10-workloads.yaml", kWorkloads), file("d/20-inventory.yaml", kInventory),
                 file("d/30-shop.yaml", kShop),
                 file("d/50-unused.yaml",
                      "version: 1\nsegments:\n  - name: unused\n    rules:\n"
                      "      - {name: nothing, from: {zone: office}, to: world}\n")};
  auto merged = mergePolicyFiles(files, "d", out_);
  ASSERT_TRUE(merged.ok()) << out_.format();

  auto compiled = compilePolicy(*merged, out_);

  ASSERT_TRUE(compiled.ok()) << out_.format();
  EXPECT_EQ(compiled->rules[0].where, "d/30-shop.yaml:5:9");
  EXPECT_EQ(compiled->rules[2].where, "d/50-unused.yaml:5:9");
  EXPECT_THAT(problems(),
              ElementsAre("d/50-unused.yaml:5:9: warning: rule `unused/nothing` selects no "
                          "workload of this host on either side, so it has no effect here"));
}

TEST_F(PolicyMergeTest, ReportsAWorkloadDefinedInTwoFilesAtBothPlaces) {
  Files files = {file("d/a.yaml", kWorkloads),
                 file("d/b.yaml", "version: 1\nworkloads:\n  - {name: db, user: 0}\n")};

  auto merged = mergePolicyFiles(files, "d", out_);

  ASSERT_FALSE(merged.ok());
  EXPECT_EQ(merged.error().message(), "d: 1 error");
  EXPECT_THAT(problems(), ElementsAre("d/b.yaml:3:5: error: duplicate workload name `db`; it is "
                                      "first defined at d/a.yaml:6:5"));
}

TEST_F(PolicyMergeTest, ReportsAnInventoryEntryDefinedInTwoFilesAtBothPlaces) {
  Files files = {
      file("d/a.yaml", kInventory),
      file("d/b.yaml", "version: 1\ninventory:\n  - {name: office, cidrs: [198.18.1.0/24]}\n")};

  auto merged = mergePolicyFiles(files, "d", out_);

  ASSERT_FALSE(merged.ok());
  EXPECT_THAT(problems(), ElementsAre("d/b.yaml:3:5: error: duplicate inventory entry name "
                                      "`office`; it is first defined at d/a.yaml:6:5"));
}

TEST_F(PolicyMergeTest, ReportsASegmentDefinedInTwoFilesAtBothPlaces) {
  Files files = {file("d/a.yaml", kWorkloads), file("d/b.yaml", kInventory),
                 file("d/c.yaml", kShop), file("d/d.yaml", kShop)};

  auto merged = mergePolicyFiles(files, "d", out_);

  ASSERT_FALSE(merged.ok());
  EXPECT_THAT(problems(), ElementsAre("d/d.yaml:3:5: error: duplicate segment name `shop`; it "
                                      "is first defined at d/c.yaml:3:5"));
}

TEST_F(PolicyMergeTest, ReportsACidrListedInTwoFilesAtBothPlaces) {
  Files files = {file("d/a.yaml", kInventory),
                 file("d/b.yaml",
                      "version: 1\ninventory:\n"
                      "  - name: pg\n    cidrs: [198.18.0.1, 198.18.0.20/32]\n")};

  auto merged = mergePolicyFiles(files, "d", out_);

  ASSERT_FALSE(merged.ok());
  EXPECT_THAT(problems(), ElementsAre("d/b.yaml:4:25: error: CIDR 198.18.0.20/32 is already "
                                      "listed by inventory entry `db-hosts` at d/a.yaml:4:13"));
}

TEST_F(PolicyMergeTest, AcceptsASelectorKeyThatOnlyAnotherFileDefines) {
  Files files = {file("d/rules.yaml", kAdmin), file("d/labels.yaml", kInventory)};

  auto merged = mergePolicyFiles(files, "d", out_);

  EXPECT_TRUE(merged.ok()) << out_.format();
  EXPECT_THAT(problems(), IsEmpty());
}

TEST_F(PolicyMergeTest, ReportsASelectorKeyThatNoFileDefinesInItsRulesFile) {
  Files files = {file("d/a.yaml", kWorkloads), file("d/b.yaml", kAdmin)};

  auto merged = mergePolicyFiles(files, "d", out_);

  ASSERT_FALSE(merged.ok());
  EXPECT_THAT(problems(), ElementsAre("d/b.yaml:6:35: error: label key `zone` is defined by no "
                                      "workload or inventory entry; the selector can never match"));
}

TEST_F(PolicyMergeTest, ChecksUnchangedFilesAgainWhenALabelKeyGoesAway) {
  Files files = shopFiles();
  auto previous = mergePolicyFiles(files, "d", out_);
  ASSERT_TRUE(previous.ok()) << out_.format();
  // The office entry, the only one with label key `zone`, moves out of the inventory.
  files[1] = file("d/20-inventory.yaml",
                  "version: 1\ninventory:\n  - {name: db-hosts, cidrs: [198.18.0.20], "
                  "labels: {app: shop, tier: db}}\n");

  auto merged = mergePolicyFiles(files, "d", out_, &*previous);

  ASSERT_FALSE(merged.ok());
  EXPECT_THAT(problems(),
              ElementsAre("d/30-shop.yaml:6:48: error: label key `zone` is defined by no workload "
                          "or inventory entry; the selector can never match",
                          "d/40-admin.yaml:6:35: error: label key `zone` is defined by no workload "
                          "or inventory entry; the selector can never match"));
}

TEST_F(PolicyMergeTest, ChecksAChangedFileAgainstKeysOfUnchangedOnes) {
  Files files = shopFiles();
  auto previous = mergePolicyFiles(files, "d", out_);
  ASSERT_TRUE(previous.ok()) << out_.format();
  files[3] = file("d/40-admin.yaml",
                  "version: 1\nsegments:\n  - name: admin\n    rules:\n"
                  "      - {name: typo, from: {zonee: office}, to: any}\n");

  auto merged = mergePolicyFiles(files, "d", out_, &*previous);

  ASSERT_FALSE(merged.ok());
  EXPECT_THAT(problems(), ElementsAre("d/40-admin.yaml:5:29: error: label key `zonee` is defined "
                                      "by no workload or inventory entry; the selector can never "
                                      "match"));
}

TEST_F(PolicyMergeTest, ParsesOneFileWithoutTheChecksAcrossFiles) {
  auto parsed = parsePolicyFile(kAdmin, "d/40-admin.yaml", out_);

  ASSERT_TRUE(parsed.ok()) << out_.format();
  EXPECT_EQ((*parsed)->path, "d/40-admin.yaml");
  EXPECT_EQ((*parsed)->content_hash, sha256Hex(kAdmin));
  ASSERT_EQ((*parsed)->segments.size(), 1u);
  EXPECT_EQ((*parsed)->segments[0]->source, "d/40-admin.yaml");
}

TEST_F(PolicyMergeTest, ReportsNamesUsedTwiceWithinOneFileOnlyOnce) {
  std::string text = "version: 1\nworkloads:\n  - {name: a, user: 0}\n  - {name: a, user: 1}\n";

  auto parsed = parsePolicyFile(text, "d/a.yaml", out_);

  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.error().message(), "d/a.yaml: 1 error");
  EXPECT_THAT(problems(), ElementsAre("d/a.yaml:4:12: error: duplicate workload name `a`; it is "
                                      "first defined at 3:12"));
}

}  // namespace
}  // namespace mseg::policy
