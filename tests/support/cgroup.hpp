// Test cgroups: a private subtree of the cgroup v2 hierarchy per test, removed with everything
// still running in it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "mseg/result.hpp"

namespace mseg::testing {

// Where the cgroup v2 hierarchy is mounted (the first cgroup2 entry of /proc/mounts): the root on
// a pure v2 host, /sys/fs/cgroup/unified on a hybrid one. Fails when none is mounted.
Result<std::filesystem::path> findCgroup2Mount();

// `<cgroup2 mount>/microseg-test`, the parent of every test cgroup.
std::filesystem::path testCgroupRoot(const std::filesystem::path& mount);

// Kills every process in the cgroup `path` and below (cgroup.kill, or SIGKILL to each pid on
// kernels before 5.14) and waits up to 5 s for them to leave. Returns whether they left; if
// not, says so on stderr.
bool killCgroupTree(const std::filesystem::path& path);

// killCgroupTree, then removes the directories deepest first. Returns whether everything went;
// what stays is named on stderr.
bool removeCgroupTree(const std::filesystem::path& path);

// A cgroup `<cgroup2 mount>/microseg-test/mseg-t-<pid>-<n>` owned by the test, with any children
// it creates. The destructor kills every process left in the subtree (through cgroup.kill, which
// kernels since 5.14 have; on older ones by SIGKILL to each listed pid until none is left), waits
// for them to leave, and removes the directories bottom-up, then microseg-test/ itself once
// empty. Never add the test process itself. Not thread-safe.
class TestCgroup {
public:
  static Result<TestCgroup> create();

  TestCgroup(TestCgroup&& other) noexcept;
  TestCgroup& operator=(TestCgroup&& other) noexcept;
  TestCgroup(const TestCgroup&) = delete;
  TestCgroup& operator=(const TestCgroup&) = delete;
  ~TestCgroup();

  // The directory of this cgroup, or of `relative` below it ("system.slice/x.service").
  std::filesystem::path path(std::string_view relative = {}) const;

  // The path as /proc/<pid>/cgroup shows it: relative to the cgroup2 mount, with a leading '/'.
  std::string pathInHierarchy(std::string_view relative = {}) const;

  // Creates `relative` below this cgroup, parents included; fine when it exists. Returns its path.
  Result<std::filesystem::path> createChild(std::string_view relative);

  // Moves `pid` (all its threads) into this cgroup or `relative` below it.
  Status addProcess(pid_t pid, std::string_view relative = {}) const;

  // The pids in this cgroup or `relative` below it (not in its children).
  Result<std::vector<pid_t>> processes(std::string_view relative = {}) const;

  // The kernel's 64-bit cgroup id, as bpf_get_current_cgroup_id() and bpf_skb_cgroup_id() see it.
  Result<uint64_t> id(std::string_view relative = {}) const;

private:
  TestCgroup(std::filesystem::path mount, std::filesystem::path path)
      : mount_(std::move(mount)), path_(std::move(path)) {}
  void destroy();

  std::filesystem::path mount_;
  std::filesystem::path path_;  // empty once moved from
};

}  // namespace mseg::testing
