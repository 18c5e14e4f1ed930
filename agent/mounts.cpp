#include "mounts.hpp"

#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <linux/magic.h>

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

bool onBpffs(const std::string& path) {
  struct statfs info {};
  return statfs(path.c_str(), &info) == 0 && info.f_type == BPF_FS_MAGIC;
}

Status ensureBpffs(const std::string& requested_pin_dir) {
  namespace fs = std::filesystem;
  const std::string default_mount = "/sys/fs/bpf";
  std::string pin_dir = requested_pin_dir;
  while (pin_dir.size() > 1 && pin_dir.back() == '/') {
    pin_dir.pop_back();
  }
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

  std::error_code err;
  fs::create_directories(pin_dir, err);
  if (err) {
    return Error(err.value(), "create pin directory " + pin_dir + ": " + err.message());
  }
  chmod(pin_dir.c_str(), 0700);
  return {};
}

}  // namespace mseg::agent
