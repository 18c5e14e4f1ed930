// The cgroup v2 tree below the attach cgroup: ids, enumeration, and a watcher that reports
// when cgroups appear or disappear so glob selectors cover new services.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "mseg/result.hpp"

namespace mseg::agent {

// The kernel's 64-bit id of a cgroup v2 directory: what bpf_get_current_cgroup_id() and its
// ancestor variants return for tasks in it.
Result<uint64_t> cgroupIdOf(const std::string& path);

struct CgroupEntry {
  // "" for the root of the walk, else "system.slice/x.service". It names the cgroup for people,
  // flow records and the control socket, which need UTF-8, so bytes of a directory name that
  // are not UTF-8 are written as `\xHH` (see validUtf8); it is not used to open the cgroup.
  std::string relative_path;
  uint64_t id = 0;
};

// Every cgroup directory at and below `root`. Directories that vanish during the walk are
// skipped (services stop all the time); other errors fail.
Result<std::vector<CgroupEntry>> listCgroups(const std::string& root);

// Watches a cgroup tree with inotify: every directory gets a watch, new ones as they appear.
// LIMITATION: a cgroup only a glob selects is labelled after the event is handled (about 9 ms
// on a 2-core VM); a process starting there earlier is unmanaged until then. Hosts with more
// cgroups than fs.inotify.max_user_watches miss some.
// Not thread-safe; owned and polled by the agent's event loop.
class CgroupWatcher {
public:
  CgroupWatcher() = default;
  ~CgroupWatcher();
  CgroupWatcher(const CgroupWatcher&) = delete;
  CgroupWatcher& operator=(const CgroupWatcher&) = delete;

  // Starts watching `root` and everything below it.
  Status start(const std::string& root);

  // The descriptor to poll for readability.
  int fd() const { return fd_; }

  // Reads pending events, adds watches on new directories, and returns whether the set of
  // cgroups changed. Call when fd() is readable.
  Result<bool> drain();

private:
  void watchTree(const std::string& dir);

  int fd_ = -1;
  std::string root_;
  std::unordered_map<int, std::string> directory_of_watch_;
};

}  // namespace mseg::agent
