#include "cgroups.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <array>
#include <cstring>

#include "mseg/utf8.hpp"

namespace mseg::agent {

Result<uint64_t> cgroupIdOf(const std::string& path) {
  // cgroupfs exports 8-byte file handles holding the kernfs node id, which is the cgroup id.
  struct {
    struct file_handle handle;
    uint64_t id;
  } buffer{};
  buffer.handle.handle_bytes = sizeof(uint64_t);
  int mount_id = 0;
  if (name_to_handle_at(AT_FDCWD, path.c_str(), &buffer.handle, &mount_id, 0) != 0) {
    return Error::fromErrno(errno, "read cgroup id of " + path);
  }
  if (buffer.handle.handle_bytes != sizeof(uint64_t)) {
    return Error(EINVAL, "unexpected cgroup file handle size for " + path);
  }
  uint64_t id = 0;
  std::memcpy(&id, buffer.handle.f_handle, sizeof(id));
  return id;
}

namespace {

// Depth-first walk with plain readdir: a directory that vanishes mid-walk (services stop all
// the time) only drops itself, never the rest of the walk, and nothing throws.
void walkCgroups(const std::string& root, const std::string& relative,
                 std::vector<CgroupEntry>& out) {
  const std::string path = relative.empty() ? root : root + "/" + relative;
  DIR* dir = opendir(path.c_str());
  if (dir == nullptr) {
    return;
  }
  while (struct dirent* entry = readdir(dir)) {
    if (entry->d_type != DT_DIR || std::strcmp(entry->d_name, ".") == 0 ||
        std::strcmp(entry->d_name, "..") == 0) {
      continue;
    }
    const std::string child = relative.empty() ? entry->d_name : relative + "/" + entry->d_name;
    auto id = cgroupIdOf(root + "/" + child);
    if (!id) {
      continue;  // removed between listing and reading
    }
    out.push_back({child, *id});
    walkCgroups(root, child, out);
  }
  closedir(dir);
}

}  // namespace

Result<std::vector<CgroupEntry>> listCgroups(const std::string& root) {
  auto root_id = cgroupIdOf(root);
  if (!root_id) {
    return root_id.error();
  }
  std::vector<CgroupEntry> entries{{"", *root_id}};
  walkCgroups(root, "", entries);
  for (auto& entry : entries) {
    entry.relative_path = validUtf8(entry.relative_path);
  }
  return entries;
}

CgroupWatcher::~CgroupWatcher() {
  if (fd_ >= 0) {
    close(fd_);
  }
}

Status CgroupWatcher::start(const std::string& root) {
  root_ = root;
  fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd_ < 0) {
    return Error::fromErrno(errno, "inotify_init1");
  }
  watchTree(root);
  return {};
}

void CgroupWatcher::watchTree(const std::string& dir) {
  int wd = inotify_add_watch(fd_, dir.c_str(), IN_CREATE | IN_DELETE | IN_ONLYDIR);
  if (wd < 0) {
    return;  // vanished already, or out of watches; the next rescan still sees it
  }
  directory_of_watch_[wd] = dir;
  DIR* listing = opendir(dir.c_str());
  if (listing == nullptr) {
    return;
  }
  while (struct dirent* entry = readdir(listing)) {
    if (entry->d_type == DT_DIR && std::strcmp(entry->d_name, ".") != 0 &&
        std::strcmp(entry->d_name, "..") != 0) {
      watchTree(dir + "/" + entry->d_name);
    }
  }
  closedir(listing);
}

Result<bool> CgroupWatcher::drain() {
  alignas(struct inotify_event) std::array<char, 16384> buffer;
  bool changed = false;
  for (;;) {
    ssize_t length = read(fd_, buffer.data(), buffer.size());
    if (length < 0) {
      if (errno == EAGAIN) {
        return changed;
      }
      return Error::fromErrno(errno, "read cgroup inotify events");
    }
    for (ssize_t offset = 0; offset < length;) {
      auto* event = reinterpret_cast<struct inotify_event*>(buffer.data() + offset);
      offset += sizeof(struct inotify_event) + event->len;
      if (event->mask & IN_Q_OVERFLOW) {
        changed = true;
        continue;
      }
      if (event->mask & IN_IGNORED) {
        directory_of_watch_.erase(event->wd);  // its directory is gone
        continue;
      }
      if (!(event->mask & IN_ISDIR)) {
        continue;
      }
      changed = true;
      auto parent = directory_of_watch_.find(event->wd);
      if ((event->mask & IN_CREATE) && parent != directory_of_watch_.end()) {
        watchTree(parent->second + "/" + event->name);
      }
    }
  }
}

}  // namespace mseg::agent
