#include "support/leftovers.hpp"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "support/cgroup.hpp"
#include "support/subprocess.hpp"

namespace mseg::testing {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kTestNamePrefix = "mseg-t-";
constexpr const char* kNamespaceDir = "/run/netns";
constexpr const char* kBpffs = "/sys/fs/bpf";

// A pid is judged in this process's pid namespace: tests of another pid namespace sharing this
// host's /run/netns and cgroups would look dead, so every test must run in the host's. A pid
// reused by an unrelated process keeps a dead test's objects until that process ends.
bool processIsRunning(pid_t pid) { return ::kill(pid, 0) == 0 || errno == EPERM; }

// The entries of `dir` named for a test process that no longer runs.
std::vector<fs::path> leftoversIn(const fs::path& dir) {
  std::vector<fs::path> found;
  std::error_code err;
  for (fs::directory_iterator it(dir, err), end; !err && it != end; it.increment(err)) {
    auto owner = ownerOfTestName(it->path().filename().string());
    if (owner && !processIsRunning(*owner)) {
      found.push_back(it->path());
    }
  }
  return found;
}

void reportSwept(const char* what, const fs::path& path) {
  std::fprintf(stderr, "swept %s left by a dead test process: %s\n", what, path.c_str());
}

void reportNotSwept(const char* what, const fs::path& path, const std::string& why) {
  std::fprintf(stderr, "warning: could not sweep %s left by a dead test process: %s: %s\n", what,
               path.c_str(), why.c_str());
}

// Pins first: unpinning a link detaches its program from the cgroup.
void sweepPinDirectory(const fs::path& pin_dir) {
  std::error_code err;
  if (fs::is_empty(pin_dir, err) && fs::remove(pin_dir, err)) {
    reportSwept("empty pin directory", pin_dir);
    return;
  }
  if (std::string_view(MSEG_MICROSEGCTL).empty()) {
    reportNotSwept("pin directory", pin_dir, "this build has no microsegctl to uninstall it");
    return;
  }
  auto uninstalled = runCommand({MSEG_MICROSEGCTL, "uninstall", "--pin-dir", pin_dir.string()});
  if (!uninstalled || uninstalled->status != 0) {
    reportNotSwept("pin directory", pin_dir,
                   uninstalled ? uninstalled->err : uninstalled.error().message());
    return;
  }
  reportSwept("pin directory", pin_dir);
}

void sweepNamespace(const fs::path& file) {
  auto deleted = runCommand({"ip", "netns", "del", file.filename().string()});
  if (deleted && deleted->status == 0) {
    reportSwept("network namespace", file.filename());
  } else if (fs::exists(file)) {  // else another test process swept it first
    reportNotSwept("network namespace", file.filename(),
                   deleted ? deleted->err : deleted.error().message());
  }
}

void sweepCgroup(const fs::path& cgroup) {
  if (removeCgroupTree(cgroup)) {
    reportSwept("cgroup", cgroup);
  }
}

void sweepTemporaryFile(const fs::path& path) {
  std::error_code err;
  fs::remove_all(path, err);
  if (err) {
    reportNotSwept("temporary file", path, err.message());
  } else {
    reportSwept("temporary file", path);
  }
}

}  // namespace

std::optional<pid_t> ownerOfTestName(std::string_view name) {
  if (name.substr(0, kTestNamePrefix.size()) != kTestNamePrefix) {
    return std::nullopt;
  }
  std::string_view rest = name.substr(kTestNamePrefix.size());
  pid_t pid = 0;
  auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), pid);
  bool followed_by_dash = end != rest.data() + rest.size() && *end == '-';
  if (ec != std::errc() || end == rest.data() || !followed_by_dash || pid <= 0) {
    return std::nullopt;
  }
  return pid;
}

void sweepLeftoversOfDeadTestProcesses() {
  // Only root could remove any of it, and only privileged tests create it.
  if (geteuid() != 0) {
    return;
  }
  auto mount = findCgroup2Mount();
  std::vector<fs::path> cgroups;
  if (mount) {
    cgroups = leftoversIn(testCgroupRoot(*mount));
  }

  // Nothing of the dead test may run while its programs are detached, and its cgroups go last
  // because the programs were attached to them.
  for (const auto& cgroup : cgroups) {
    killCgroupTree(cgroup);
  }
  for (const auto& pin_dir : leftoversIn(kBpffs)) {
    sweepPinDirectory(pin_dir);
  }
  for (const auto& file : leftoversIn(kNamespaceDir)) {
    sweepNamespace(file);
  }
  for (const auto& cgroup : cgroups) {
    sweepCgroup(cgroup);
  }
  if (mount) {
    ::rmdir(testCgroupRoot(*mount).c_str());  // fails while other tests use it, which is fine
  }
  for (const auto& path : leftoversIn(fs::temp_directory_path())) {
    sweepTemporaryFile(path);
  }
}

void sweepLeftoversOnce() {
  static std::once_flag swept;
  std::call_once(swept, sweepLeftoversOfDeadTestProcesses);
}

}  // namespace mseg::testing
