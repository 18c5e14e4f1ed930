#include "file_watcher.hpp"

#include <sys/inotify.h>
#include <unistd.h>

#include <array>
#include <filesystem>

namespace mseg::agent {

FileWatcher::~FileWatcher() {
  if (fd_ >= 0) {
    close(fd_);
  }
}

Status FileWatcher::start(const std::string& path) {
  const std::filesystem::path file = std::filesystem::absolute(path);
  name_ = file.filename().string();
  fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd_ < 0) {
    return Error::fromErrno(errno, "inotify_init1");
  }
  // The directory, not the file: a rename over the file replaces the inode a file watch holds.
  if (inotify_add_watch(fd_, file.parent_path().c_str(), IN_CLOSE_WRITE | IN_MOVED_TO) < 0) {
    return Error::fromErrno(errno, "watch " + file.parent_path().string());
  }
  return {};
}

bool FileWatcher::changed() {
  alignas(struct inotify_event) std::array<char, 4096> buffer;
  bool changed = false;
  for (;;) {
    ssize_t length = read(fd_, buffer.data(), buffer.size());
    if (length <= 0) {
      return changed;
    }
    for (ssize_t offset = 0; offset < length;) {
      auto* event = reinterpret_cast<struct inotify_event*>(buffer.data() + offset);
      offset += sizeof(struct inotify_event) + event->len;
      if (event->len > 0 && name_ == event->name) {
        changed = true;
      }
    }
  }
}

}  // namespace mseg::agent
