// File descriptor helpers shared by the state store and the file outputs.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>
#include <string_view>
#include <utility>

#include "mseg/result.hpp"

namespace mseg::collector {

// An owned descriptor, closed on destruction.
class FileDescriptor {
public:
  FileDescriptor() = default;
  explicit FileDescriptor(int fd) : fd_(fd) {}
  FileDescriptor(FileDescriptor&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  FileDescriptor& operator=(FileDescriptor&& other) noexcept {
    if (this != &other) {
      reset(std::exchange(other.fd_, -1));
    }
    return *this;
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor() { reset(); }

  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }

  void reset(int fd = -1) {
    if (fd_ >= 0) {
      ::close(fd_);
    }
    fd_ = fd;
  }

private:
  int fd_ = -1;
};

// Writes all of `data`, retrying short writes and EINTR.
Status writeAll(int fd, std::string_view data);

// The whole content of the file at `path`; the error keeps open()'s errno (ENOENT...).
Result<std::string> readWholeFile(const std::filesystem::path& path);

// Makes a rename or a new file in `dir` durable: fsync on the directory itself.
Status syncDirectory(const std::filesystem::path& dir);

}  // namespace mseg::collector
