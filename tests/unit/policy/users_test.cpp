// User resolution at compile time: uids, names this host knows, and names it does not.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "mseg/policy/compiler.hpp"

namespace mseg::policy {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

// No host has this user: names are at most 32 characters on Linux.
constexpr std::string_view kUnknownUser = "mseg-no-such-user-on-any-host-xyz";

class UserResolutionTest : public ::testing::Test {
protected:
  // One workload `batch` with the given `users:` value, and a rule selecting it as a source.
  CompiledPolicy compileWithUsers(std::string_view users) {
    std::string text =
        "version: 1\n"
        "workloads:\n"
        "  - name: batch\n"
        "    users: " +
        std::string(users) +
        "\n"
        "    labels: {app: batch}\n"
        "segments:\n"
        "  - name: s\n"
        "    rules:\n"
        "      - {name: out, from: {app: batch}, to: world, protocol: tcp}\n";
    auto compiled = loadPolicyText(text, "u.yaml", diagnostics_);
    EXPECT_TRUE(compiled.ok()) << diagnostics_.format();
    return compiled.ok() ? std::move(compiled).value() : CompiledPolicy{};
  }

  std::vector<std::string> warnings() const {
    std::vector<std::string> lines;
    for (const auto& diagnostic : diagnostics_.all()) {
      EXPECT_EQ(diagnostic.severity, Severity::Warning);
      lines.push_back(diagnostic.toString());
    }
    return lines;
  }

  Diagnostics diagnostics_;
};

TEST_F(UserResolutionTest, TakesNumericUidsAsTheyAre) {
  auto policy = compileWithUsers("[0, 1234, \"5678\", 1234]");

  EXPECT_THAT(policy.workloads[0].uids, ElementsAre(0u, 1234u, 5678u));
  EXPECT_THAT(policy.workloads[0].unresolved_users, IsEmpty());
  EXPECT_THAT(warnings(), IsEmpty());
}

TEST_F(UserResolutionTest, ResolvesRootToUidZero) {
  auto policy = compileWithUsers("[root]");

  EXPECT_THAT(policy.workloads[0].uids, ElementsAre(0u));
  EXPECT_THAT(warnings(), IsEmpty());
}

TEST_F(UserResolutionTest, WarnsAboutAnUnknownUserAndKeepsTheOthers) {
  auto policy = compileWithUsers("[root, " + std::string(kUnknownUser) + "]");

  EXPECT_THAT(policy.workloads[0].uids, ElementsAre(0u));
  EXPECT_THAT(policy.workloads[0].unresolved_users, ElementsAre(kUnknownUser));
  EXPECT_THAT(warnings(), ElementsAre("u.yaml:4:19: warning: user `" + std::string(kUnknownUser) +
                                      "` of workload `batch` does not exist on this host; it is "
                                      "left out here"));
  EXPECT_TRUE(policy.workloads[0].egress_managed);
}

TEST_F(UserResolutionTest, SelectsNothingWhenNoUserOfAWorkloadExists) {
  auto policy = compileWithUsers(std::string(kUnknownUser));

  const CompiledWorkload& batch = policy.workloads[0];
  EXPECT_THAT(batch.uids, IsEmpty());
  EXPECT_THAT(batch.unresolved_users, ElementsAre(kUnknownUser));
  EXPECT_FALSE(batch.egress_managed);
  EXPECT_THAT(policy.entries, IsEmpty());
  EXPECT_FALSE(workloadSelects(batch, "any/cgroup", 0));
  EXPECT_THAT(warnings(),
              ElementsAre("u.yaml:4:12: warning: user `" + std::string(kUnknownUser) +
                              "` of workload `batch` does not exist on this host; it is left out "
                              "here",
                          "u.yaml:3:5: warning: workload `batch` selects nothing on this host: "
                          "none of its users exists here",
                          "u.yaml:9:27: warning: `from` of rule `s/out` matches no workload or "
                          "inventory entry on this host"));
}

}  // namespace
}  // namespace mseg::policy
