#include "file_watcher.hpp"

#include <dirent.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "logging.hpp"
#include "mseg/policy/source.hpp"

namespace mseg::agent {
namespace {

namespace fs = std::filesystem;

// Every watch takes the same events, so that watching one directory for two reasons (the
// policy path and a link target beside it) is one watch: inotify_add_watch on a directory
// already watched replaces its mask.
constexpr uint32_t kDirectoryEvents =
    IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CREATE;
// An editor moves the old file away and writes the new one within microseconds; a removal with
// nothing after it for this long is a removal.
constexpr auto kQuietPeriod = std::chrono::milliseconds(50);
// A removal followed by a steady stream of unrelated events is reported after this at the latest.
constexpr auto kLongestWait = std::chrono::seconds(1);
// As the kernel's own limit on symlinks followed in one lookup.
constexpr int kMaxLinkHops = 40;

std::string withoutTrailingSlash(std::string path) {
  while (path.size() > 1 && path.back() == '/') {
    path.pop_back();
  }
  return path;
}

bool isSymlink(const std::string& path) {
  struct stat info {};
  return lstat(path.c_str(), &info) == 0 && S_ISLNK(info.st_mode);
}

}  // namespace

FileWatcher::~FileWatcher() {
  if (fd_ >= 0) {
    close(fd_);
  }
}

Status FileWatcher::start(const std::string& path) {
  path_ = withoutTrailingSlash(fs::absolute(path).lexically_normal().string());
  fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd_ < 0) {
    return Error::fromErrno(errno, "inotify_init1");
  }
  return arm();
}

// The entry of `path` in its directory and, while that entry is a symlink, the entry it points
// to, hop by hop: replacing any link of the chain, or the file at its end, is a change.
// LIMITATION: a symlink among the directories above an entry (/srv/current -> releases/42) is
// not watched; a policy reached through one is reloaded when a watched entry changes or on
// SIGHUP.
void FileWatcher::watchLinkChain(std::string path, std::map<std::string, Watch>& wanted) const {
  for (int hop = 0; hop < kMaxLinkHops; ++hop) {
    fs::path entry(path);
    wanted[entry.parent_path().string()].names.insert(entry.filename().string());
    if (!isSymlink(path)) {
      return;
    }
    std::error_code err;
    fs::path target = fs::read_symlink(entry, err);
    if (err) {
      return;
    }
    path = (target.is_absolute() ? target : entry.parent_path() / target).lexically_normal();
  }
}

Status FileWatcher::arm() {
  std::map<std::string, Watch> wanted;
  watchLinkChain(path_, wanted);
  struct stat info {};
  if (stat(path_.c_str(), &info) == 0 && S_ISDIR(info.st_mode)) {
    wanted[path_].policy_files = true;
    if (DIR* directory = opendir(path_.c_str())) {
      while (const dirent* entry = readdir(directory)) {
        std::string file = path_ + "/" + entry->d_name;
        if (policy::isPolicyFileName(entry->d_name) && isSymlink(file)) {
          watchLinkChain(file, wanted);
        }
      }
      closedir(directory);
    }
  }

  std::map<int, Watch> armed;
  std::map<int, std::string> directories;
  const std::string policy_parent = fs::path(path_).parent_path().string();
  for (auto& [directory, watch] : wanted) {
    int wd = inotify_add_watch(fd_, directory.c_str(), kDirectoryEvents);
    if (wd < 0 && directory == policy_parent) {
      return Error::fromErrno(errno, "watch " + directory);
    }
    if (wd < 0) {
      // A link pointing into a directory that is gone: the policy fails to load until it is
      // fixed, and fixing it replaces the link, which is watched.
      logger("agent")->warn(
          "cannot watch a policy link target, its changes need SIGHUP "
          "directory={} err={}",
          directory, std::strerror(errno));
      continue;
    }
    Watch& armed_watch = armed[wd];
    armed_watch.names.insert(watch.names.begin(), watch.names.end());
    armed_watch.policy_files = armed_watch.policy_files || watch.policy_files;
    directories[wd] = directory;
  }
  for (const auto& [wd, watch] : watches_) {
    if (armed.count(wd) == 0) {
      inotify_rm_watch(fd_, wd);
    }
  }
  watches_ = std::move(armed);
  directories_ = std::move(directories);
  return {};
}

FileWatcher::Event FileWatcher::classify(const inotify_event& event) const {
  if (event.mask & IN_Q_OVERFLOW) {
    return Event::Content;  // events were lost: anything may have changed
  }
  auto watch = watches_.find(event.wd);
  if (watch == watches_.end() || event.len == 0) {
    return Event::None;
  }
  const std::string name = event.name;
  const bool policy_file = watch->second.policy_files && policy::isPolicyFileName(name);
  if (!policy_file && watch->second.names.count(name) == 0) {
    return Event::None;
  }
  if (event.mask & (IN_CLOSE_WRITE | IN_MOVED_TO)) {
    return Event::Content;
  }
  if (event.mask & IN_CREATE) {
    // A new regular file is still being written, and its close comes next. A symlink or a hard
    // link is complete when it appears.
    struct stat info {};
    std::string path = directories_.at(event.wd) + "/" + name;
    if (lstat(path.c_str(), &info) == 0 && (S_ISLNK(info.st_mode) || info.st_nlink > 1)) {
      return Event::Content;
    }
    return Event::None;
  }
  // A removal counts in a policy directory only: a single policy file that goes away keeps
  // its last version enforcing, as it always has, and is only reported.
  if (policy_file) {
    return Event::Removal;
  }
  return (event.mask & (IN_DELETE | IN_MOVED_FROM)) ? Event::Gone : Event::None;
}

void FileWatcher::warnIfPolicyGone() {
  // A removed link whose name is back (pointed elsewhere) leaves a path that still resolves.
  if (policy_gone_ || access(path_.c_str(), F_OK) == 0) {
    return;
  }
  policy_gone_ = true;
  logger("policy")->warn("policy file is gone, the last applied version keeps enforcing; restore "
                         "the file to change the policy, `microsegctl uninstall` stops "
                         "enforcement path={}",
                         path_);
}

FileWatcher::Event FileWatcher::readEvents() {
  alignas(struct inotify_event) std::array<char, 4096> buffer;
  Event seen = Event::None;
  for (;;) {
    ssize_t length = read(fd_, buffer.data(), buffer.size());
    if (length <= 0) {
      return seen;
    }
    for (ssize_t offset = 0; offset < length;) {
      auto* event = reinterpret_cast<struct inotify_event*>(buffer.data() + offset);
      offset += sizeof(struct inotify_event) + event->len;
      if (event->mask & IN_IGNORED) {
        watches_.erase(event->wd);  // its directory is gone
        continue;
      }
      seen = std::max(seen, classify(*event));
    }
  }
}

bool FileWatcher::changed() {
  Event seen = readEvents();
  auto deadline = std::chrono::steady_clock::now() + kLongestWait;
  while ((seen == Event::Removal || seen == Event::Gone) &&
         std::chrono::steady_clock::now() < deadline) {
    pollfd pending{fd_, POLLIN, 0};
    if (poll(&pending, 1, static_cast<int>(kQuietPeriod.count())) <= 0) {
      break;
    }
    seen = std::max(seen, readEvents());
  }
  if (seen == Event::Gone) {
    warnIfPolicyGone();
    return false;
  }
  if (seen == Event::None) {
    return false;
  }
  policy_gone_ = false;
  // Links may point elsewhere now, and new policy files may be links.
  if (auto armed = arm(); !armed) {
    logger("agent")->warn("cannot watch the policy, its changes need SIGHUP err={}",
                          armed.error().message());
  }
  return true;
}

}  // namespace mseg::agent
