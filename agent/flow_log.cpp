#include "flow_log.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "mseg/format/ocsf.hpp"

namespace mseg::agent {
namespace {

constexpr size_t kBatchBytes = 256 * 1024;

}  // namespace

Result<FlowLog> FlowLog::open(std::string path, uint64_t max_bytes, unsigned keep) {
  std::error_code err;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), err);
  FlowLog log(std::move(path), max_bytes, keep);
  if (auto opened = log.reopen(); !opened) {
    return opened.error();
  }
  return log;
}

FlowLog::FlowLog(FlowLog&& other) noexcept
    : path_(std::move(other.path_)),
      max_bytes_(other.max_bytes_),
      keep_(other.keep_),
      fd_(other.fd_),
      size_(other.size_),
      batch_(std::move(other.batch_)) {
  other.fd_ = -1;
}

FlowLog& FlowLog::operator=(FlowLog&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) {
      (void)flush();
      close(fd_);
    }
    path_ = std::move(other.path_);
    max_bytes_ = other.max_bytes_;
    keep_ = other.keep_;
    fd_ = other.fd_;
    size_ = other.size_;
    batch_ = std::move(other.batch_);
    other.fd_ = -1;
  }
  return *this;
}

FlowLog::~FlowLog() {
  if (fd_ >= 0) {
    (void)flush();
    close(fd_);
  }
}

Status FlowLog::reopen() {
  if (fd_ >= 0) {
    close(fd_);
  }
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd_ < 0) {
    return Error::fromErrno(errno, "open flow log " + path_);
  }
  struct stat info {};
  size_ = fstat(fd_, &info) == 0 ? static_cast<uint64_t>(info.st_size) : 0;
  return {};
}

Status FlowLog::rotate() {
  namespace fs = std::filesystem;
  if (auto flushed = flush(); !flushed) {
    return flushed;
  }
  std::error_code err;
  if (keep_ == 0) {
    fs::remove(path_, err);
    return reopen();
  }
  fs::remove(path_ + "." + std::to_string(keep_), err);
  for (unsigned index = keep_; index > 1; index--) {
    fs::rename(path_ + "." + std::to_string(index - 1), path_ + "." + std::to_string(index), err);
  }
  fs::rename(path_, path_ + ".1", err);
  return reopen();
}

Status FlowLog::write(const microseg::telemetry::v1::FlowRecord& record) {
  std::string line = format::renderOcsf(record);
  line.push_back('\n');
  if (size_ > 0 && size_ + line.size() > max_bytes_) {
    if (auto rotated = rotate(); !rotated) {
      return rotated;
    }
  }
  batch_ += line;
  size_ += line.size();
  if (batch_.size() >= kBatchBytes) {
    return flush();
  }
  return {};
}

Status FlowLog::flush() {
  size_t written = 0;
  while (written < batch_.size()) {
    ssize_t result = ::write(fd_, batch_.data() + written, batch_.size() - written);
    if (result < 0) {
      if (errno == EINTR) {
        continue;
      }
      int err = errno;
      batch_.erase(0, written);
      return Error::fromErrno(err, "write flow log " + path_);
    }
    written += static_cast<size_t>(result);
  }
  batch_.clear();
  return {};
}

}  // namespace mseg::agent
