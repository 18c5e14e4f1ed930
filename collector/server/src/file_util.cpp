#include "file_util.hpp"

#include <fcntl.h>

#include <cerrno>

namespace mseg::collector {

Status writeAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t written = ::write(fd, data.data(), data.size());
    if (written < 0) {
      if (errno == EINTR) {
        continue;
      }
      return Error::fromErrno(errno, "write");
    }
    data.remove_prefix(static_cast<size_t>(written));
  }
  return {};
}

Result<std::string> readWholeFile(const std::filesystem::path& path) {
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    return Error::fromErrno(errno, "open " + path.string());
  }
  std::string text;
  char buffer[4096];
  while (true) {
    ssize_t n = ::read(fd.get(), buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      return Error::fromErrno(errno, "read " + path.string());
    }
    if (n == 0) {
      return text;
    }
    text.append(buffer, static_cast<size_t>(n));
  }
}

Status syncDirectory(const std::filesystem::path& dir) {
  FileDescriptor fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) {
    return Error::fromErrno(errno, "open directory " + dir.string());
  }
  if (::fsync(fd.get()) != 0) {
    return Error::fromErrno(errno, "fsync directory " + dir.string());
  }
  return {};
}

}  // namespace mseg::collector
