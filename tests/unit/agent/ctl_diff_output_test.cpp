// What `microsegctl policy diff` prints when a new policy moves cgroups between workloads or
// removes workloads: the cgroups first, removed workloads as one line each.
#include <gtest/gtest.h>

#include <string>

#include "ctl_output.hpp"

namespace mseg::ctl {
namespace {

void addCgroupChange(cv1::PolicyDiff& diff, const std::string& cgroup, const std::string& before,
                     const std::string& after, uint32_t below = 0) {
  auto* change = diff.add_cgroups();
  change->set_cgroup(cgroup);
  change->set_old_workload(before);
  change->set_new_workload(after);
  change->set_cgroups_below(below);
}

// One workload `everything` for "*" replaces erp-app and crm-web.
cv1::PolicyDiff everythingReplacesTwoWorkloads() {
  cv1::PolicyDiff diff;
  diff.set_valid(true);
  addCgroupChange(diff, "crm-web.service", "crm-web", "");
  addCgroupChange(diff, "erp-app.service", "erp-app", "everything", 2);
  addCgroupChange(diff, "ssh.service", "", "everything");
  diff.add_removed_workloads("crm-web");
  diff.add_removed_workloads("erp-app");
  diff.add_removed_workloads("gone");
  auto* path = diff.add_paths();
  path->set_workload("everything");
  path->set_peer("any");
  path->set_direction("egress");
  path->set_protocol("any");
  path->set_old_verdict("unmanaged");
  path->set_new_verdict("deny");
  path->set_new_rule("(default deny)");
  path->set_change("closes");
  return diff;
}

TEST(DiffOutputTest, CgroupsAndRemovedWorkloadsComeBeforeRulesAndPaths) {
  const std::string text = renderDiff(everythingReplacesTwoWorkloads(), "new.yaml");

  const size_t cgroups = text.find("CGROUP");
  const size_t removed = text.find("workload removed: crm-web");
  const size_t paths = text.find("PATH");
  ASSERT_NE(cgroups, std::string::npos) << text;
  ASSERT_NE(removed, std::string::npos) << text;
  ASSERT_NE(paths, std::string::npos) << text;
  EXPECT_LT(cgroups, removed);
  EXPECT_LT(removed, paths);
  EXPECT_NE(text.find("erp-app.service (and 2 below)  erp-app          everything\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("ssh.service                    (unmanaged)      everything\n"),
            std::string::npos)
      << text;
}

TEST(DiffOutputTest, RemovedWorkloadSaysWhatItsCgroupsBecome) {
  const std::string text = renderDiff(everythingReplacesTwoWorkloads(), "new.yaml");

  EXPECT_NE(text.find("workload removed: crm-web: cgroup crm-web.service becomes unmanaged\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("workload removed: erp-app: cgroup erp-app.service (and 2 below) "
                      "becomes workload everything\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("workload removed: gone: no cgroup of this host belongs to it\n"),
            std::string::npos)
      << text;
}

TEST(DiffOutputTest, RemovedWorkloadAloneIsAChange) {
  cv1::PolicyDiff diff;
  diff.add_removed_workloads("gone");

  const std::string text = renderDiff(diff, "new.yaml");

  EXPECT_EQ(text.find("no changes"), std::string::npos) << text;
}

}  // namespace
}  // namespace mseg::ctl
