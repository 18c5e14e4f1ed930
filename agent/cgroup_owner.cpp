#include "cgroup_owner.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <vector>

#include "cgroups.hpp"
#include "mseg/unique_fd.hpp"

namespace mseg::agent {
namespace {

namespace fs = std::filesystem;

// The kernel's limit of programs per cgroup and attach type (BPF_CGROUP_MAX_PROGS).
constexpr uint32_t kMaxProgramsPerType = 64;
// Pin directories are a few levels below a bpffs mount; deeper trees are other software's.
constexpr int kMaxPinDirDepth = 8;

// Ids of the programs attached directly to the cgroup (not inherited), at microseg's types.
Result<std::set<uint32_t>> attachedPrograms(int cgroup_fd, const std::string& cgroup_path) {
  std::set<uint32_t> ids;
  for (bpf_attach_type type : kMicrosegAttachTypes) {
    std::array<uint32_t, kMaxProgramsPerType> found{};
    uint32_t count = found.size();
    uint32_t flags = 0;
    if (bpf_prog_query(cgroup_fd, type, 0, &flags, found.data(), &count) != 0) {
      return Error::fromErrno(errno, "query the programs attached to cgroup " + cgroup_path);
    }
    ids.insert(found.begin(), found.begin() + count);
  }
  return ids;
}

struct PinnedLink {
  uint64_t cgroup_id = 0;
  uint32_t program_id = 0;
};

// The cgroup links pinned as link_* in `dir`; unreadable pins are skipped.
std::vector<PinnedLink> pinnedLinks(const fs::path& dir) {
  std::vector<PinnedLink> links;
  std::error_code err;
  for (auto it = fs::directory_iterator(dir, err); !err && it != fs::directory_iterator();
       it.increment(err)) {
    if (it->path().filename().string().rfind("link_", 0) != 0) {
      continue;
    }
    UniqueFd link(bpf_obj_get(it->path().c_str()));
    bpf_link_info info{};
    uint32_t length = sizeof(info);
    if (!link || bpf_obj_get_info_by_fd(link.get(), &info, &length) != 0 ||
        info.type != BPF_LINK_TYPE_CGROUP) {
      continue;
    }
    links.push_back({info.cgroup.cgroup_id, info.prog_id});
  }
  return links;
}

bool isPinDirectory(const fs::path& dir) {
  std::error_code err;
  for (auto it = fs::directory_iterator(dir, err); !err && it != fs::directory_iterator();
       it.increment(err)) {
    if (it->path().filename().string().rfind("mseg_cfg_v", 0) == 0) {
      return true;
    }
  }
  return false;
}

void findPinDirectories(const fs::path& dir, int depth, std::vector<fs::path>& found) {
  if (isPinDirectory(dir)) {
    found.push_back(dir);
  }
  if (depth == kMaxPinDirDepth) {
    return;
  }
  std::error_code err;
  for (auto it = fs::directory_iterator(dir, err); !err && it != fs::directory_iterator();
       it.increment(err)) {
    if (it->is_directory(err) && !it->is_symlink(err)) {
      findPinDirectories(it->path(), depth + 1, found);
    }
  }
}

// Every microseg pin directory (one that holds a config map) on every bpffs mount.
std::vector<fs::path> microsegPinDirectories() {
  std::vector<fs::path> found;
  std::set<std::string> mounts;
  std::ifstream table("/proc/mounts");
  for (std::string line; std::getline(table, line);) {
    std::istringstream fields(line);
    std::string device, mount_point, type;
    fields >> device >> mount_point >> type;
    if (type == "bpf" && mounts.insert(mount_point).second) {
      findPinDirectories(mount_point, 0, found);
    }
  }
  return found;
}

// The program's name, or "" when the kernel does not tell (reading a program by id needs
// CAP_SYS_ADMIN).
std::string programName(uint32_t id) {
  UniqueFd program(bpf_prog_get_fd_by_id(id));
  bpf_prog_info info{};
  uint32_t length = sizeof(info);
  if (!program || bpf_obj_get_info_by_fd(program.get(), &info, &length) != 0) {
    return "";
  }
  return std::string(info.name, strnlen(info.name, sizeof(info.name)));
}

fs::path normalized(const std::string& path) {
  std::error_code err;
  fs::path canonical = fs::weakly_canonical(path, err);
  return err ? fs::path(path).lexically_normal() : canonical;
}

std::string joined(const std::vector<std::string>& items) {
  std::string text;
  for (const auto& item : items) {
    text += (text.empty() ? "" : ", ") + item;
  }
  return text;
}

Error enforcedFromOtherPinDirs(const std::string& cgroup_path,
                               const std::vector<std::string>& others) {
  const std::string& other = others.front();
  return Error(EEXIST,
               "cgroup " + cgroup_path + " is already enforced by microseg programs pinned in " +
                   joined(others) +
                   " (another microsegd, running or stopped: its programs stay attached when it "
                   "stops); two agents on one cgroup would both judge every connection. Stop "
                   "that agent and remove its programs with `microsegctl uninstall --pin-dir " +
                   other + "`, or start this agent with --pin-dir " + other +
                   " to take them over; nothing was changed");
}

Error enforcedWithoutPins(const std::string& cgroup_path, const std::vector<std::string>& names) {
  return Error(EEXIST,
               "cgroup " + cgroup_path + " already has microseg programs attached (" +
                   joined(names) +
                   ") that no pin directory on bpffs holds: a running microsegd whose pin "
                   "directory was removed keeps them attached. Stop that microsegd (its "
                   "programs detach when it exits), then start this one; nothing was changed");
}

}  // namespace

Status checkNoOtherAgentOnCgroup(const std::string& cgroup_path, const std::string& pin_dir) {
  UniqueFd cgroup(::open(cgroup_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!cgroup) {
    return Error::fromErrno(errno, "open cgroup " + cgroup_path);
  }
  auto attached = attachedPrograms(cgroup.get(), cgroup_path);
  if (!attached) {
    return attached.error();
  }
  const fs::path own_dir = normalized(pin_dir);
  for (const auto& link : pinnedLinks(own_dir)) {
    attached->erase(link.program_id);  // ours: this agent takes them over
  }
  if (attached->empty()) {
    return {};
  }

  auto cgroup_id = cgroupIdOf(cgroup_path);
  if (!cgroup_id) {
    return cgroup_id.error();
  }
  std::vector<std::string> other_dirs;
  for (const auto& dir : microsegPinDirectories()) {
    if (normalized(dir.string()) == own_dir) {
      continue;
    }
    bool enforces_here = false;
    for (const auto& link : pinnedLinks(dir)) {
      if (link.cgroup_id == *cgroup_id && attached->erase(link.program_id) > 0) {
        enforces_here = true;
      }
    }
    if (enforces_here) {
      other_dirs.push_back(dir.string());
    }
  }
  if (!other_dirs.empty()) {
    return enforcedFromOtherPinDirs(cgroup_path, other_dirs);
  }

  std::vector<std::string> unpinned;
  for (uint32_t id : *attached) {
    const std::string name = programName(id);
    if (name.rfind("mseg_", 0) == 0) {
      unpinned.push_back(name + " (id " + std::to_string(id) + ")");
    }
  }
  if (!unpinned.empty()) {
    return enforcedWithoutPins(cgroup_path, unpinned);
  }
  return {};
}

}  // namespace mseg::agent
