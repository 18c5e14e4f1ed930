#include "mounts.hpp"

#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <bpf/bpf.h>
#include <linux/magic.h>

#include "logging.hpp"
#include "mseg/unique_fd.hpp"

namespace mseg::agent {

Result<std::string> findCgroup2Mount() {
  std::ifstream mounts("/proc/mounts");
  if (!mounts) {
    return Error::fromErrno(errno, "open /proc/mounts");
  }
  std::string line;
  while (std::getline(mounts, line)) {
    std::istringstream fields(line);
    std::string device, mount_point, type;
    fields >> device >> mount_point >> type;
    if (type == "cgroup2") {
      return mount_point;
    }
  }
  return Error(ENOENT,
               "no cgroup2 filesystem in /proc/mounts; mount one (mount -t cgroup2 none "
               "/sys/fs/cgroup/unified) or boot with systemd.unified_cgroup_hierarchy");
}

namespace {

namespace fs = std::filesystem;

// Pinned in a pin directory whose parents the agent created: an array map of one entry, the
// number of parents. bpffs holds nothing but directories and BPF objects, so the record is one.
constexpr const char* kCreatedParentsPin = "created_parents";

std::string withoutTrailingSlashes(std::string path) {
  while (path.size() > 1 && path.back() == '/') {
    path.pop_back();
  }
  return path;
}

uint32_t missingParents(const std::string& pin_dir) {
  uint32_t missing = 0;
  std::error_code err;
  for (fs::path parent = fs::path(pin_dir).parent_path();
       !parent.empty() && parent != parent.root_path() && !fs::exists(parent, err);
       parent = parent.parent_path()) {
    missing += 1;
  }
  return missing;
}

// A failure only means that uninstall leaves the parents: a warning, not a failed start.
void recordCreatedParents(const std::string& pin_dir, uint32_t count) {
  const std::string path = pin_dir + "/" + kCreatedParentsPin;
  UniqueFd map(bpf_map_create(BPF_MAP_TYPE_ARRAY, "mseg_parents", sizeof(uint32_t),
                              sizeof(uint32_t), 1, nullptr));
  uint32_t zero = 0;
  if (!map || bpf_map_update_elem(map.get(), &zero, &count, BPF_ANY) != 0 ||
      bpf_obj_pin(map.get(), path.c_str()) != 0) {
    logger("bpf")->warn("cannot record the parents of the pin directory it created, "
                        "uninstall will leave them path={} parents={} err={}",
                        path, count, std::strerror(errno));
  }
}

uint32_t recordedParents(const std::string& pin_dir) {
  UniqueFd map(bpf_obj_get((pin_dir + "/" + kCreatedParentsPin).c_str()));
  uint32_t zero = 0;
  uint32_t count = 0;
  if (!map || bpf_map_lookup_elem(map.get(), &zero, &count) != 0) {
    return 0;
  }
  return count;
}

}  // namespace

bool onBpffs(const std::string& path) {
  struct statfs info {};
  return statfs(path.c_str(), &info) == 0 && info.f_type == BPF_FS_MAGIC;
}

Status ensureBpffs(const std::string& requested_pin_dir) {
  const std::string default_mount = "/sys/fs/bpf";
  const std::string pin_dir = withoutTrailingSlashes(requested_pin_dir);
  if (pin_dir == default_mount || (onBpffs(pin_dir) && !onBpffs(fs::path(pin_dir).parent_path()))) {
    return Error(EINVAL, "pin directory " + requested_pin_dir +
                             " is a bpffs mount point; give a directory inside it, such as " +
                             default_mount + "/microseg");
  }

  fs::path probe = fs::path(pin_dir).parent_path();
  while (!probe.empty() && !fs::exists(probe)) {
    probe = probe.parent_path();
  }
  if (!onBpffs(probe.string())) {
    if (probe.string().rfind(default_mount, 0) != 0) {
      return Error(EINVAL, "pin directory " + pin_dir + " is not on a bpffs mount");
    }
    if (mount("bpf", default_mount.c_str(), "bpf", 0, "mode=0700") != 0) {
      return Error::fromErrno(errno, "mount bpffs at " + default_mount +
                                         " (needs CAP_SYS_ADMIN, or mount it before starting)");
    }
  }

  const uint32_t created_parents = missingParents(pin_dir);
  std::error_code err;
  fs::create_directories(pin_dir, err);
  if (err) {
    return Error(err.value(), "create pin directory " + pin_dir + ": " + err.message());
  }
  chmod(pin_dir.c_str(), 0700);
  if (created_parents > 0) {
    recordCreatedParents(pin_dir, created_parents);
  }
  return {};
}

Status removePinDirectory(const std::string& requested_pin_dir) {
  const std::string pin_dir = withoutTrailingSlashes(requested_pin_dir);
  const uint32_t created_parents = recordedParents(pin_dir);
  std::error_code err;
  fs::remove(fs::path(pin_dir) / kCreatedParentsPin, err);
  if (!fs::remove(pin_dir, err) || err) {
    return Error(err.value() != 0 ? err.value() : ENOTEMPTY,
                 "microseg's pins are removed, but " + pin_dir +
                     " holds other files and was kept: " + err.message());
  }
  // Never above the bpffs mount: what ensureBpffs created lies below it.
  fs::path parent = fs::path(pin_dir).parent_path();
  for (uint32_t level = 0; level < created_parents; level++) {
    if (!onBpffs(parent.parent_path().string()) || rmdir(parent.c_str()) != 0) {
      break;  // not empty (someone else uses it), or the mount itself
    }
    parent = parent.parent_path();
  }
  return {};
}

}  // namespace mseg::agent
