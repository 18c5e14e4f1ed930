#include "flow_log.hpp"

#include <sys/stat.h>

#include <filesystem>

#include "mseg/format/ocsf.hpp"

namespace mseg::agent {

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
      file_(other.file_),
      size_(other.size_) {
  other.file_ = nullptr;
}

FlowLog& FlowLog::operator=(FlowLog&& other) noexcept {
  if (this != &other) {
    if (file_ != nullptr) {
      std::fclose(file_);
    }
    path_ = std::move(other.path_);
    max_bytes_ = other.max_bytes_;
    keep_ = other.keep_;
    file_ = other.file_;
    size_ = other.size_;
    other.file_ = nullptr;
  }
  return *this;
}

FlowLog::~FlowLog() {
  if (file_ != nullptr) {
    std::fclose(file_);
  }
}

Status FlowLog::reopen() {
  if (file_ != nullptr) {
    std::fclose(file_);
  }
  file_ = std::fopen(path_.c_str(), "ae");
  if (file_ == nullptr) {
    return Error::fromErrno(errno, "open flow log " + path_);
  }
  struct stat info {};
  size_ = fstat(fileno(file_), &info) == 0 ? static_cast<uint64_t>(info.st_size) : 0;
  return {};
}

Status FlowLog::rotate() {
  namespace fs = std::filesystem;
  std::error_code err;
  std::fflush(file_);
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
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size()) {
    return Error::fromErrno(errno, "write flow log " + path_);
  }
  size_ += line.size();
  return {};
}

Status FlowLog::flush() {
  if (std::fflush(file_) != 0) {
    return Error::fromErrno(errno, "flush flow log " + path_);
  }
  return {};
}

}  // namespace mseg::agent
