// A policy path that is a directory: which files count, in which order, how they merge, and
// that a reload reads and parses only what changed.
#include "mseg/policy/source.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "mseg/policy/compiler.hpp"

namespace mseg::policy {
namespace {

namespace fs = std::filesystem;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::IsEmpty;

constexpr std::string_view kWorkloads = R"(version: 1
workloads:
  - {name: web, cgroup: web.service, labels: {tier: web}}
  - {name: db, cgroup: db.service, labels: {tier: db}}
)";

constexpr std::string_view kInventory = R"(version: 1
inventory:
  - {name: db-hosts, cidrs: [198.18.0.20], labels: {tier: db}}
)";

constexpr std::string_view kShop = R"(version: 1
segments:
  - name: shop
    rules:
      - {name: web-to-db, from: {tier: web}, to: {tier: db}, protocol: tcp, ports: [5432]}
)";

constexpr std::string_view kAdmin = R"(version: 1
segments:
  - name: admin
    rules:
      - {name: ssh, from: {tier: web}, to: {tier: db}, protocol: tcp, ports: [22]}
)";

class PolicySourceTest : public ::testing::Test {
protected:
  void SetUp() override {
    char pattern[] = "/tmp/mseg-source-test.XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
    // Trusts a stat at once: every test changes files by rename, which changes the inode.
    source_ = std::make_unique<PolicySource>(dir_, std::chrono::nanoseconds(0));
  }

  void TearDown() override { fs::remove_all(dir_); }

  // Writes `text` to a new file renamed over `name`, as configuration management does: a new
  // inode, so its stat differs even within one timestamp tick.
  void write(const std::string& name, std::string_view text) {
    std::string temporary = dir_ + "/.tmp-" + name;
    std::ofstream(temporary) << text;
    fs::rename(temporary, dir_ + "/" + name);
  }

  void writeShop() {
    write("10-workloads.yaml", kWorkloads);
    write("20-inventory.yml", kInventory);
    write("30-shop.yaml", kShop);
    write("40-admin.yaml", kAdmin);
  }

  std::string path(const std::string& name) const { return dir_ + "/" + name; }

  std::vector<std::string> problems() const {
    std::vector<std::string> lines;
    for (const auto* diagnostic : out_.sorted()) {
      lines.push_back(diagnostic->toString());
    }
    return lines;
  }

  static std::vector<std::string> segmentNames(const Policy& policy) {
    std::vector<std::string> names;
    for (const auto& segment : policy.segments) {
      names.push_back(segment->name);
    }
    return names;
  }

  std::string dir_;
  Diagnostics out_;
  std::unique_ptr<PolicySource> source_;
};

TEST_F(PolicySourceTest, CompilesADirectoryLikeTheSameRulesInOneFile) {
  writeShop();
  std::string one = dir_ + "-one.yaml";
  std::ofstream(one)
      << "version: 1\n"
         "workloads:\n  - {name: web, cgroup: web.service, labels: {tier: web}}\n"
         "  - {name: db, cgroup: db.service, labels: {tier: db}}\n"
         "inventory:\n  - {name: db-hosts, cidrs: [198.18.0.20], labels: {tier: db}}\n"
         "segments:\n  - name: shop\n    rules:\n"
         "      - {name: web-to-db, from: {tier: web}, to: {tier: db}, protocol: tcp, "
         "ports: [5432]}\n"
         "  - name: admin\n    rules:\n"
         "      - {name: ssh, from: {tier: web}, to: {tier: db}, protocol: tcp, "
         "ports: [22]}\n";

  auto from_dir = loadPolicyFile(dir_, out_);
  auto from_file = loadPolicyFile(one, out_);
  fs::remove(one);

  ASSERT_TRUE(from_dir.ok()) << out_.format();
  ASSERT_TRUE(from_file.ok()) << out_.format();
  EXPECT_THAT(out_.all(), IsEmpty()) << out_.format();
  ASSERT_EQ(from_dir->entries.size(), from_file->entries.size());
  for (size_t i = 0; i < from_file->entries.size(); ++i) {
    const VerdictEntry& a = from_dir->entries[i];
    const VerdictEntry& b = from_file->entries[i];
    EXPECT_EQ(std::tie(a.direction, a.workload_id, a.peer_id, a.protocol, a.port, a.port_prefix_len,
                       a.verdict, a.rule_index),
              std::tie(b.direction, b.workload_id, b.peer_id, b.protocol, b.port, b.port_prefix_len,
                       b.verdict, b.rule_index));
  }
  EXPECT_EQ(from_dir->rules[1].where, path("40-admin.yaml") + ":5:9");
  EXPECT_EQ(from_dir->source_name, dir_);
}

TEST_F(PolicySourceTest, TakesPolicyFilesInByteOrderOfTheirNames) {
  write("10-workloads.yaml", kWorkloads);
  write("11-inventory.yaml", kInventory);
  write("9-b.yaml", "version: 1\nsegments: [{name: nine, rules: []}]\n");
  write("B.yml", "version: 1\nsegments: [{name: upper-b, rules: []}]\n");
  write("a.yaml", "version: 1\nsegments: [{name: lower-a, rules: []}]\n");

  auto policy = source_->load(out_);

  ASSERT_TRUE(policy.ok()) << out_.format();
  EXPECT_THAT(segmentNames(*policy), ElementsAre("nine", "upper-b", "lower-a"));
  ASSERT_EQ(policy->files.size(), 5u);
  EXPECT_EQ(policy->files[0]->path, path("10-workloads.yaml"));
}

TEST_F(PolicySourceTest, IgnoresBackupsHiddenFilesAndOtherNames) {
  writeShop();
  for (const char* name : {"30-shop.yaml~", ".30-shop.yaml.swp", ".hidden.yaml", "README",
                           "notes.txt", "x.yaml.orig", ".yaml"}) {
    std::ofstream(path(name)) << "not: [a, policy\n";
  }

  auto policy = source_->load(out_);

  ASSERT_TRUE(policy.ok()) << out_.format();
  EXPECT_EQ(source_->lastLoad().files, 4u);
  EXPECT_THAT(segmentNames(*policy), ElementsAre("shop", "admin"));
}

TEST_F(PolicySourceTest, FollowsASymlinkToARegularFile) {
  writeShop();
  std::string target = dir_ + "-admin-target.yaml";
  fs::rename(path("40-admin.yaml"), target);
  fs::create_symlink(target, path("40-admin.yaml"));

  auto policy = source_->load(out_);
  fs::remove(target);

  ASSERT_TRUE(policy.ok()) << out_.format();
  EXPECT_THAT(segmentNames(*policy), ElementsAre("shop", "admin"));
}

TEST_F(PolicySourceTest, RefusesADirectoryWithoutPolicyFilesSayingWhy) {
  std::ofstream(path("README")) << "policy lives here\n";

  auto policy = source_->load(out_);

  ASSERT_FALSE(policy.ok());
  EXPECT_EQ(policy.error().code(), EINVAL);
  EXPECT_EQ(policy.error().message(),
            "load policy: " + dir_ +
                " holds no policy file (*.yaml or *.yml); an empty policy would drop every rule, "
                "so it is refused: add the policy files, or point the policy path at a file");
}

TEST_F(PolicySourceTest, NamesAnEntryThatIsNotARegularFile) {
  writeShop();
  fs::create_directory(path("50-sub.yaml"));
  fs::create_symlink(dir_ + "/nowhere", path("60-dangling.yaml"));

  auto policy = source_->load(out_);

  ASSERT_FALSE(policy.ok());
  EXPECT_EQ(policy.error().message(), dir_ + ": 2 errors");
  EXPECT_THAT(problems(),
              ElementsAre(path("50-sub.yaml") +
                              ": error: not a regular file (a directory, device or pipe); a "
                              "policy directory holds policy files, and every *.yaml or *.yml "
                              "name in it is taken for one",
                          path("60-dangling.yaml") +
                              ": error: cannot read this policy file: No such file or directory"));
}

TEST_F(PolicySourceTest, ReportsAProblemAcrossFilesAtBothPlaces) {
  writeShop();
  write("50-more.yaml", "version: 1\nsegments:\n  - name: shop\n    rules: []\n");

  auto policy = source_->load(out_);

  ASSERT_FALSE(policy.ok());
  EXPECT_THAT(problems(), ElementsAre(path("50-more.yaml") +
                                      ":3:5: error: duplicate segment name `shop`; it is first "
                                      "defined at " +
                                      path("30-shop.yaml") + ":3:5"));
}

TEST_F(PolicySourceTest, NeitherReadsNorParsesUnchangedFiles) {
  writeShop();
  auto first = source_->load(out_);
  ASSERT_TRUE(first.ok()) << out_.format();
  EXPECT_EQ(source_->lastLoad().parsed, 4u);

  auto second = source_->load(out_);

  ASSERT_TRUE(second.ok()) << out_.format();
  EXPECT_EQ(source_->lastLoad().files, 4u);
  EXPECT_EQ(source_->lastLoad().read, 0u);
  EXPECT_EQ(source_->lastLoad().parsed, 0u);
  EXPECT_EQ(second->files, first->files);
  EXPECT_EQ(second->content_hash, first->content_hash);
}

TEST_F(PolicySourceTest, ParsesOnlyTheChangedFileAndKeepsTheOthersShared) {
  writeShop();
  auto first = source_->load(out_);
  ASSERT_TRUE(first.ok()) << out_.format();
  std::string admin(kAdmin);
  admin.replace(admin.find("[22]"), 4, "[2222]");
  write("40-admin.yaml", admin);

  auto second = source_->load(out_);

  ASSERT_TRUE(second.ok()) << out_.format();
  EXPECT_EQ(source_->lastLoad().read, 1u);
  EXPECT_EQ(source_->lastLoad().parsed, 1u);
  ASSERT_EQ(second->files.size(), 4u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(second->files[i], first->files[i]) << i;
  }
  EXPECT_NE(second->files[3], first->files[3]);
  EXPECT_EQ(second->segments[0], first->segments[0]);
  EXPECT_EQ(second->segments[1]->rules[0].ports[0].first, 2222);
  EXPECT_NE(second->content_hash, first->content_hash);
}

TEST_F(PolicySourceTest, ReusesAFileRewrittenWithTheSameContent) {
  writeShop();
  auto first = source_->load(out_);
  ASSERT_TRUE(first.ok()) << out_.format();
  write("30-shop.yaml", kShop);

  auto second = source_->load(out_);

  ASSERT_TRUE(second.ok()) << out_.format();
  EXPECT_EQ(source_->lastLoad().read, 1u);
  EXPECT_EQ(source_->lastLoad().parsed, 0u);
  EXPECT_EQ(second->files, first->files);
}

TEST_F(PolicySourceTest, DropsTheRulesOfARemovedFile) {
  writeShop();
  ASSERT_TRUE(source_->load(out_).ok()) << out_.format();
  fs::remove(path("40-admin.yaml"));

  auto policy = source_->load(out_);

  ASSERT_TRUE(policy.ok()) << out_.format();
  EXPECT_THAT(segmentNames(*policy), ElementsAre("shop"));
  EXPECT_EQ(source_->lastLoad().parsed, 0u);
}

TEST_F(PolicySourceTest, LoadsAFixedFileAfterABrokenOneWasRefused) {
  writeShop();
  ASSERT_TRUE(source_->load(out_).ok()) << out_.format();
  write("40-admin.yaml", "version: 1\nsegments:\n  - name: admin\n    mode: enforcing\n");

  auto broken = source_->load(out_);
  auto still_broken = source_->load(out_);
  EXPECT_EQ(source_->lastLoad().parsed, 1u);  // a failed file is not remembered
  write("40-admin.yaml", kAdmin);
  Diagnostics fixed_out;
  auto fixed = source_->load(fixed_out);

  ASSERT_FALSE(broken.ok());
  ASSERT_FALSE(still_broken.ok());
  EXPECT_EQ(broken.error().message(), dir_ + ": 2 errors");
  EXPECT_THAT(problems(), Contains(path("40-admin.yaml") +
                                   ":4:11: error: invalid mode `enforcing`; expected one of: "
                                   "enforce, audit"));
  ASSERT_TRUE(fixed.ok()) << fixed_out.format();
  EXPECT_THAT(segmentNames(*fixed), ElementsAre("shop", "admin"));
}

TEST_F(PolicySourceTest, ReadsAgainAFileChangedTooRecentlyForItsStatToTell) {
  writeShop();
  PolicySource cautious(dir_, std::chrono::hours(1));
  auto first = cautious.load(out_);
  ASSERT_TRUE(first.ok()) << out_.format();

  auto second = cautious.load(out_);

  ASSERT_TRUE(second.ok()) << out_.format();
  EXPECT_EQ(cautious.lastLoad().read, 4u);
  EXPECT_EQ(cautious.lastLoad().parsed, 0u);
  EXPECT_EQ(second->files, first->files);
}

TEST_F(PolicySourceTest, HashesTheDirectoryAsTheDocumentedCommandDoes) {
  writeShop();
  std::ofstream(path("README")) << "ignored\n";

  auto policy = source_->load(out_);
  std::string command = "cd '" + dir_ +
                        "' && LC_ALL=C ls | grep -E '\\.ya?ml$' | xargs -d '\\n' sha256sum -- | "
                        "sha256sum | cut -d' ' -f1";
  FILE* shell = popen(command.c_str(), "r");
  ASSERT_NE(shell, nullptr);
  char buffer[128] = {};
  std::string printed = fgets(buffer, sizeof(buffer), shell) != nullptr ? buffer : "";
  pclose(shell);

  ASSERT_TRUE(policy.ok()) << out_.format();
  EXPECT_EQ(policy->content_hash + "\n", printed);
}

TEST_F(PolicySourceTest, ReloadsASingleFileOnlyWhenItChanged) {
  write("policy.yaml",
        std::string(kWorkloads) + "inventory:\n  - {name: h, cidrs: [198.18.0.1]}\n");
  PolicySource file(path("policy.yaml"), std::chrono::nanoseconds(0));
  auto first = file.load(out_);
  ASSERT_TRUE(first.ok()) << out_.format();

  auto second = file.load(out_);

  ASSERT_TRUE(second.ok()) << out_.format();
  EXPECT_EQ(file.lastLoad().read, 0u);
  EXPECT_EQ(second->files, first->files);
  EXPECT_EQ(second->source_name, path("policy.yaml"));
  EXPECT_EQ(second->content_hash, first->files[0]->content_hash);
  EXPECT_EQ(first->workloads[0].source, path("policy.yaml"));
}

}  // namespace
}  // namespace mseg::policy
