#include "mseg/collector/ocsf_file_output.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "file_util.hpp"
#include "mseg/collector/logging.hpp"
#include "mseg/format/ocsf.hpp"

namespace mseg::collector {
namespace {

std::string rotatedPath(const std::string& path, uint32_t index) {
  return path + "." + std::to_string(index);
}

std::filesystem::path parentOf(const std::string& path) {
  auto parent = std::filesystem::path(path).parent_path();
  return parent.empty() ? std::filesystem::path(".") : parent;
}

}  // namespace

Result<std::unique_ptr<OcsfFileOutput>> OcsfFileOutput::open(const OcsfFileOutputConfig& config) {
  std::error_code error;
  std::filesystem::create_directories(parentOf(config.path), error);
  if (error) {
    return Error::fromErrno(error.value(), "create directory of " + config.path);
  }

  std::unique_ptr<OcsfFileOutput> output(new OcsfFileOutput(config));
  if (auto opened = output->openFile(); !opened) {
    return opened.error();
  }
  return output;
}

OcsfFileOutput::~OcsfFileOutput() {
  if (fd_ >= 0) {
    ::close(fd_);
  }
}

Status OcsfFileOutput::openFile() {
  fd_ = ::open(config_.path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd_ < 0) {
    return Error::fromErrno(errno, "open " + config_.path);
  }
  struct stat info {};
  if (::fstat(fd_, &info) != 0) {
    return Error::fromErrno(errno, "stat " + config_.path);
  }
  size_ = static_cast<uint64_t>(info.st_size);
  return {};
}

Status OcsfFileOutput::rotate() {
  ::close(fd_);
  fd_ = -1;

  // Oldest first, so that no rename overwrites a file still to be moved.
  std::remove(rotatedPath(config_.path, config_.keep).c_str());
  for (uint32_t index = config_.keep; index > 1; --index) {
    if (::rename(rotatedPath(config_.path, index - 1).c_str(),
                 rotatedPath(config_.path, index).c_str()) != 0 &&
        errno != ENOENT) {
      return Error::fromErrno(errno, "rotate " + rotatedPath(config_.path, index - 1));
    }
  }
  if (::rename(config_.path.c_str(), rotatedPath(config_.path, 1).c_str()) != 0) {
    return Error::fromErrno(errno, "rotate " + config_.path);
  }
  if (auto opened = openFile(); !opened) {
    return opened;
  }
  ++stats_.rotations;
  if (config_.fsync == FsyncPolicy::kBatch) {
    return syncDirectory(parentOf(config_.path));
  }
  return {};
}

Status OcsfFileOutput::write(std::span<const FlowRecord* const> records) {
  std::string lines;
  for (const FlowRecord* record : records) {
    lines += format::renderOcsf(*record);
    lines += '\n';
  }

  std::lock_guard lock(mutex_);
  // A failed rotation leaves no file open; the next batch tries again.
  if (fd_ < 0) {
    if (auto opened = openFile(); !opened) {
      ++stats_.errors;
      return opened.error().wrap("output " + config_.name);
    }
  }
  if (size_ > 0 && size_ + lines.size() > config_.max_bytes) {
    if (auto rotated = rotate(); !rotated) {
      ++stats_.errors;
      return rotated.error().wrap("output " + config_.name);
    }
  }

  // TODO: every batch pays its own fdatasync under the lock, so with many busy agents the disk's
  // flush latency bounds the collector's batch rate; batches of several workers waiting here
  // could share one flush (group commit).
  Status written = writeAll(fd_, lines);
  if (written && config_.fsync == FsyncPolicy::kBatch && ::fdatasync(fd_) != 0) {
    written = Error::fromErrno(errno, "fdatasync");
  }
  if (!written) {
    ++stats_.errors;
    // A partial line would corrupt the file and the retry would duplicate the lines that made
    // it; cut the file back to where this batch began.
    if (::ftruncate(fd_, static_cast<off_t>(size_)) != 0) {
      collectorLog()->error("cannot truncate after a failed write output={} path={} err={}",
                            config_.name, config_.path, std::strerror(errno));
    }
    return written.error().wrap("output " + config_.name + " " + config_.path);
  }
  size_ += lines.size();
  stats_.records += records.size();
  return {};
}

void OcsfFileOutput::stop(uint32_t /*deadline_ms*/) {
  std::lock_guard lock(mutex_);
  if (fd_ >= 0) {
    ::fdatasync(fd_);
  }
}

OutputStats OcsfFileOutput::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

}  // namespace mseg::collector
