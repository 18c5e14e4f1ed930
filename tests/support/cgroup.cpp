#include "support/cgroup.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "support/netns.hpp"
#include "support/poll.hpp"

namespace mseg::testing {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

constexpr const char* kTestRoot = "microseg-test";
constexpr auto kEmptyTimeout = std::chrono::seconds(5);

// /proc/mounts escapes space, tab, newline and backslash in paths as \ooo octal.
std::string unescapeMountPath(std::string_view text) {
  std::string path;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 3 < text.size()) {
      int value = 0;
      bool octal = true;
      for (size_t j = 1; j <= 3; ++j) {
        char c = text[i + j];
        octal = octal && c >= '0' && c <= '7';
        value = value * 8 + (c - '0');
      }
      if (octal) {
        path.push_back(static_cast<char>(value));
        i += 3;
        continue;
      }
    }
    path.push_back(text[i]);
  }
  return path;
}

Status writeFile(const fs::path& path, std::string_view text) {
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    return Error::fromErrno(errno, "open " + path.string());
  }
  ssize_t n = write(fd, text.data(), text.size());
  int err = errno;
  close(fd);
  if (n != static_cast<ssize_t>(text.size())) {
    return Error::fromErrno(n < 0 ? err : EIO,
                            "write '" + std::string(text) + "' to " + path.string());
  }
  return {};
}

Result<std::vector<pid_t>> readPids(const fs::path& procs) {
  std::ifstream in(procs);
  if (!in) {
    return Error::fromErrno(errno, "read " + procs.string());
  }
  std::vector<pid_t> pids;
  pid_t pid = 0;
  while (in >> pid) {
    pids.push_back(pid);
  }
  return pids;
}

bool isPopulated(const fs::path& cgroup) {
  std::ifstream in(cgroup / "cgroup.events");
  std::string key;
  int value = 0;
  while (in >> key >> value) {
    if (key == "populated") {
      return value != 0;
    }
  }
  return false;  // gone
}

// Every directory at and below `root`, deepest first, so that removing them in order works.
std::vector<fs::path> subtreeBottomUp(const fs::path& root) {
  std::vector<fs::path> dirs{root};
  std::error_code err;
  for (fs::recursive_directory_iterator it(root, err), end; !err && it != end; it.increment(err)) {
    if (it->is_directory(err)) {
      dirs.push_back(it->path());
    }
  }
  std::sort(dirs.begin(), dirs.end(), [](const fs::path& a, const fs::path& b) {
    return std::distance(a.begin(), a.end()) > std::distance(b.begin(), b.end());
  });
  return dirs;
}

void killSubtree(const fs::path& root) {
  if (fs::exists(root / "cgroup.kill")) {
    (void)writeFile(root / "cgroup.kill", "1");
    return;
  }
  // Without cgroup.kill a process may fork between our read and our kill: repeat until empty.
  pollUntil(kEmptyTimeout, [&] {
    bool any = false;
    for (const auto& dir : subtreeBottomUp(root)) {
      auto pids = readPids(dir / "cgroup.procs");
      for (pid_t pid : pids ? *pids : std::vector<pid_t>{}) {
        ::kill(pid, SIGKILL);
        any = true;
      }
    }
    return !any;
  });
}

}  // namespace

bool killCgroupTree(const fs::path& path) {
  killSubtree(path);
  bool emptied = pollUntil(kEmptyTimeout, [&] { return !isPopulated(path); });
  if (!emptied) {
    std::fprintf(stderr, "warning: processes remain in test cgroup %s\n", path.c_str());
  }
  return emptied;
}

bool removeCgroupTree(const fs::path& path) {
  bool emptied = killCgroupTree(path);

  // rmdir can briefly fail with EBUSY while killed tasks finish exiting.
  bool all_removed = true;
  for (const auto& dir : subtreeBottomUp(path)) {
    bool removed = pollUntil(
        kEmptyTimeout, [&] { return rmdir(dir.c_str()) == 0 || errno == ENOENT; },
        milliseconds(20));
    if (!removed) {
      std::fprintf(stderr, "warning: test cgroup left behind: %s: %s\n", dir.c_str(),
                   std::strerror(errno));
      all_removed = false;
    }
  }
  return emptied && all_removed;
}

fs::path testCgroupRoot(const fs::path& mount) { return mount / kTestRoot; }

Result<fs::path> findCgroup2Mount() {
  std::ifstream mounts("/proc/mounts");
  if (!mounts) {
    return Error::fromErrno(errno, "read /proc/mounts");
  }
  std::string line;
  while (std::getline(mounts, line)) {
    std::istringstream fields(line);
    std::string device, mount_point, type;
    if (fields >> device >> mount_point >> type && type == "cgroup2") {
      return fs::path(unescapeMountPath(mount_point));
    }
  }
  return Error(ENOENT, "find cgroup2 mount: none in /proc/mounts");
}

Result<TestCgroup> TestCgroup::create() {
  auto mount = findCgroup2Mount();
  if (!mount) {
    return mount.error();
  }
  fs::path root = testCgroupRoot(*mount);
  fs::path path = root / uniqueName();

  // Another test's cleanup may remove the shared root between our two mkdir calls.
  for (int attempt = 0; attempt < 3; ++attempt) {
    if (mkdir(root.c_str(), 0755) != 0 && errno != EEXIST) {
      return Error::fromErrno(errno, "create " + root.string());
    }
    if (mkdir(path.c_str(), 0755) == 0) {
      return TestCgroup(*mount, path);
    }
    if (errno != ENOENT) {
      break;
    }
  }
  return Error::fromErrno(errno, "create " + path.string());
}

TestCgroup::TestCgroup(TestCgroup&& other) noexcept
    : mount_(std::move(other.mount_)), path_(std::exchange(other.path_, fs::path())) {}

TestCgroup& TestCgroup::operator=(TestCgroup&& other) noexcept {
  if (this != &other) {
    destroy();
    mount_ = std::move(other.mount_);
    path_ = std::exchange(other.path_, fs::path());
  }
  return *this;
}

TestCgroup::~TestCgroup() { destroy(); }

void TestCgroup::destroy() {
  if (path_.empty()) {
    return;
  }
  fs::path path = std::exchange(path_, fs::path());
  removeCgroupTree(path);
  // Fails while other tests still use it, which is fine.
  rmdir((mount_ / kTestRoot).c_str());
}

fs::path TestCgroup::path(std::string_view relative) const {
  return relative.empty() ? path_ : path_ / relative;
}

std::string TestCgroup::pathInHierarchy(std::string_view relative) const {
  return "/" + fs::relative(path(relative), mount_).string();
}

Result<fs::path> TestCgroup::createChild(std::string_view relative) {
  fs::path child = path(relative);
  std::error_code err;
  fs::create_directories(child, err);
  if (err) {
    return Error(err.value(), "create cgroup " + child.string() + ": " + err.message());
  }
  return child;
}

Status TestCgroup::addProcess(pid_t pid, std::string_view relative) const {
  return writeFile(path(relative) / "cgroup.procs", std::to_string(pid));
}

Result<std::vector<pid_t>> TestCgroup::processes(std::string_view relative) const {
  return readPids(path(relative) / "cgroup.procs");
}

Result<uint64_t> TestCgroup::id(std::string_view relative) const {
  // cgroupfs hands out 8-byte file handles holding the kernfs node id, which is the cgroup id.
  struct {
    struct file_handle handle;
    uint64_t id;
  } buffer{};
  buffer.handle.handle_bytes = sizeof(uint64_t);
  int mount_id = 0;
  fs::path dir = path(relative);
  if (name_to_handle_at(AT_FDCWD, dir.c_str(), &buffer.handle, &mount_id, 0) != 0) {
    return Error::fromErrno(errno, "read cgroup id of " + dir.string());
  }
  uint64_t id = 0;
  std::memcpy(&id, buffer.handle.f_handle, sizeof(id));
  return id;
}

}  // namespace mseg::testing
