#include "flow_log.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "logging.hpp"
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
      batch_(std::move(other.batch_)),
      batch_records_(other.batch_records_),
      records_written_(other.records_written_),
      records_dropped_(other.records_dropped_),
      failing_(other.failing_) {
  other.fd_ = -1;
  other.batch_.clear();
  other.batch_records_ = 0;
}

FlowLog& FlowLog::operator=(FlowLog&& other) noexcept {
  if (this != &other) {
    close();
    path_ = std::move(other.path_);
    max_bytes_ = other.max_bytes_;
    keep_ = other.keep_;
    fd_ = other.fd_;
    size_ = other.size_;
    batch_ = std::move(other.batch_);
    batch_records_ = other.batch_records_;
    records_written_ = other.records_written_;
    records_dropped_ = other.records_dropped_;
    failing_ = other.failing_;
    other.fd_ = -1;
    other.batch_.clear();
    other.batch_records_ = 0;
  }
  return *this;
}

FlowLog::~FlowLog() { close(); }

// The owner flushes and counts on its own ticks; this last flush has no one left to count for,
// so a loss here is logged.
void FlowLog::close() {
  if (auto flushed = flush(); !flushed) {
    logger("agent")->warn("flow records lost closing the flow log dropped_total={} err={}",
                          records_dropped_, flushed.error().message());
  }
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

Status FlowLog::reopen() {
  if (fd_ >= 0) {
    ::close(fd_);
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
      records_dropped_ += 1;
      return rotated;
    }
  }
  batch_ += line;
  batch_records_ += 1;
  size_ += line.size();
  if (batch_.size() >= kBatchBytes) {
    return flush();
  }
  return {};
}

Status FlowLog::flush() {
  if (batch_.empty()) {
    return {};
  }
  if (fd_ < 0) {
    if (auto opened = reopen(); !opened) {
      return dropBatch(0, opened.error());
    }
  }
  size_t written = 0;
  while (written < batch_.size()) {
    ssize_t result = ::write(fd_, batch_.data() + written, batch_.size() - written);
    if (result < 0) {
      if (errno == EINTR) {
        continue;
      }
      return dropBatch(written, Error::fromErrno(errno, "write flow log " + path_));
    }
    written += static_cast<size_t>(result);
  }
  records_written_ += batch_records_;
  batch_.clear();
  batch_records_ = 0;
  failing_ = false;
  return {};
}

// The first `written` bytes of the batch are in the file. Whole lines among them are kept; a
// torn last line is cut off the file (a reader would otherwise see broken JSON, and the next
// line would be glued to it); the rest of the batch is dropped and counted.
Status FlowLog::dropBatch(size_t written, Error error) {
  const size_t last_newline = written == 0 ? std::string::npos : batch_.rfind('\n', written - 1);
  const size_t kept = last_newline == std::string::npos ? 0 : last_newline + 1;
  const auto kept_records =
      static_cast<uint64_t>(std::count(batch_.begin(), batch_.begin() + kept, '\n'));
  if (written > kept) {
    struct stat info {};
    const size_t torn = written - kept;
    if (fstat(fd_, &info) != 0 || info.st_size < static_cast<off_t>(torn) ||
        ftruncate(fd_, info.st_size - static_cast<off_t>(torn)) != 0) {
      error = Error::fromErrno(errno, "cut a torn line off the flow log " + path_ + " after: " +
                                          error.message());
    }
  }
  records_written_ += kept_records;
  records_dropped_ += batch_records_ - kept_records;
  size_ -= batch_.size() - kept;
  batch_.clear();
  batch_records_ = 0;
  failing_ = true;
  return error;
}

}  // namespace mseg::agent
