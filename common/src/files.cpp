#include "mseg/files.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "mseg/unique_fd.hpp"

namespace mseg {

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
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
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
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) {
    return Error::fromErrno(errno, "open directory " + dir.string());
  }
  if (::fsync(fd.get()) != 0) {
    return Error::fromErrno(errno, "fsync directory " + dir.string());
  }
  return {};
}

namespace {

// Writes and flushes the temporary file; the caller removes it on failure.
Status writeTemporary(const std::filesystem::path& temporary, std::string_view text, mode_t mode) {
  UniqueFd fd(::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (!fd) {
    return Error::fromErrno(errno, "create " + temporary.string());
  }
  if (auto written = writeAll(fd.get(), text); !written) {
    return written.error().wrap(temporary.string());
  }
  // Without this, a crash soon after the rename can leave an empty file under the name.
  if (::fdatasync(fd.get()) != 0) {
    return Error::fromErrno(errno, "flush " + temporary.string());
  }
  // close() reports the delayed write errors of some file systems (NFS).
  if (::close(fd.release()) != 0) {
    return Error::fromErrno(errno, "close " + temporary.string());
  }
  return {};
}

}  // namespace

Status replaceFile(const std::filesystem::path& path, std::string_view text, mode_t mode) {
  std::filesystem::path temporary = path;
  temporary += ".tmp";
  if (auto written = writeTemporary(temporary, text, mode); !written) {
    ::unlink(temporary.c_str());
    return written;
  }
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(temporary.c_str());
    return Error::fromErrno(err, "replace " + path.string());
  }
  return syncDirectory(path.has_parent_path() ? path.parent_path() : ".");
}

}  // namespace mseg
