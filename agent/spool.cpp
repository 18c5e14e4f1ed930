#include "spool.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cinttypes>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "mseg/files.hpp"

namespace mseg::agent {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kSegmentBytes = 4ull << 20;
constexpr const char* kSegmentSuffix = ".seg";

// Each record on disk: its length as 4 little-endian bytes, then the serialized protobuf.
void appendFrame(std::string& out, const std::string& payload) {
  const uint32_t length = static_cast<uint32_t>(payload.size());
  for (int shift = 0; shift < 32; shift += 8) {
    out.push_back(static_cast<char>((length >> shift) & 0xff));
  }
  out += payload;
}

// The payloads of the complete frames in `data`; `complete_bytes` says where the last whole
// frame ends (a crash can leave a torn frame after it).
std::vector<std::string_view> parseFrames(std::string_view data, size_t& complete_bytes) {
  std::vector<std::string_view> frames;
  size_t offset = 0;
  while (offset + 4 <= data.size()) {
    uint32_t length = 0;
    for (int index = 3; index >= 0; index--) {
      length = (length << 8) | static_cast<uint8_t>(data[offset + index]);
    }
    if (offset + 4 + length > data.size()) {
      break;
    }
    frames.push_back(data.substr(offset + 4, length));
    offset += 4 + length;
  }
  complete_bytes = offset;
  return frames;
}

Result<std::string> readFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return Error::fromErrno(errno, "read spool segment " + path);
  }
  std::stringstream content;
  content << file.rdbuf();
  return content.str();
}

}  // namespace

Result<std::unique_ptr<Spool>> Spool::open(std::string dir, uint64_t max_bytes) {
  std::error_code err;
  fs::create_directories(dir, err);
  if (err) {
    return Error(err.value(), "create spool " + dir + ": " + err.message());
  }
  std::unique_ptr<Spool> spool(new Spool(std::move(dir), max_bytes));
  if (auto recovered = spool->recover(); !recovered) {
    return recovered.error();
  }
  return spool;
}

std::string Spool::segmentPath(uint64_t first_sequence) const {
  char name[32];
  std::snprintf(name, sizeof(name), "%020" PRIu64 "%s", first_sequence, kSegmentSuffix);
  return dir_ + "/" + name;
}

Status Spool::recover() {
  if (std::ifstream state(dir_ + "/state"); state) {
    state >> next_sequence_ >> acknowledged_ >> dropped_;
    if (next_sequence_ == 0) {
      next_sequence_ = 1;
    }
  }
  std::error_code err;
  for (const auto& entry : fs::directory_iterator(dir_, err)) {
    const std::string name = entry.path().filename().string();
    if (name.size() > 4 && name.ends_with(kSegmentSuffix)) {
      segment_bytes_[std::stoull(name)] = entry.file_size(err);
    }
  }
  // The newest segment may end in a torn frame; cut it off and learn its last sequence.
  if (!segment_bytes_.empty()) {
    auto last = std::prev(segment_bytes_.end());
    auto content = readFile(segmentPath(last->first));
    if (!content) {
      return content.error();
    }
    size_t complete = 0;
    auto frames = parseFrames(*content, complete);
    if (complete < content->size()) {
      (void)truncate(segmentPath(last->first).c_str(), static_cast<off_t>(complete));
    }
    last->second = complete;
    next_sequence_ = std::max(next_sequence_, last->first + frames.size());
  }
  for (const auto& [first, bytes] : segment_bytes_) {
    total_bytes_ += bytes;
  }
  return acknowledge(acknowledged_);
}

Status Spool::persistState() const {
  const std::string text = std::to_string(next_sequence_) + " " + std::to_string(acknowledged_) +
                           " " + std::to_string(dropped_) + "\n";
  if (auto written = replaceFile(dir_ + "/state", text, 0600); !written) {
    return written.error().wrap("write spool state");
  }
  return {};
}

void Spool::append(microseg::telemetry::v1::FlowRecord& record, const std::string& host) {
  std::lock_guard lock(mutex_);
  const uint64_t sequence = next_sequence_++;
  record.set_sequence(sequence);
  record.set_record_id(host + "-" + std::to_string(sequence));
  if (queued_.empty()) {
    queued_first_ = sequence;
  }
  appendFrame(queued_, record.SerializeAsString());
}

Status Spool::startSegment(uint64_t first_sequence) {
  if (segment_fd_ >= 0) {
    close(segment_fd_);
  }
  segment_first_ = first_sequence;
  segment_fd_ = ::open(segmentPath(first_sequence).c_str(),
                       O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (segment_fd_ < 0) {
    return Error::fromErrno(errno, "create spool segment " + segmentPath(first_sequence));
  }
  segment_bytes_.emplace(first_sequence, 0);
  return {};
}

Status Spool::sync() {
  std::lock_guard lock(mutex_);
  if (queued_.empty()) {
    return {};
  }
  const bool segment_full =
      segment_fd_ >= 0 && segment_bytes_[segment_first_] >= kSegmentBytes;
  if (segment_fd_ < 0 || segment_full) {
    if (auto started = startSegment(queued_first_); !started) {
      return started;
    }
  }
  if (auto written = writeAll(segment_fd_, queued_); !written) {
    // A full disk may have taken part of the batch: cut it off, so that the next sync writes
    // the batch again after whole frames, not after a torn one.
    (void)ftruncate(segment_fd_, static_cast<off_t>(segment_bytes_[segment_first_]));
    return written.error().wrap("write spool segment " + segmentPath(segment_first_));
  }
  if (fdatasync(segment_fd_) != 0) {
    return Error::fromErrno(errno, "sync spool segment");
  }
  segment_bytes_[segment_first_] += queued_.size();
  total_bytes_ += queued_.size();
  queued_.clear();
  dropOldestSegments();
  return persistState();
}

void Spool::dropOldestSegments() {
  while (total_bytes_ > max_bytes_ && segment_bytes_.size() > 1) {
    auto oldest = segment_bytes_.begin();
    const uint64_t last = std::next(oldest)->first - 1;
    if (last > acknowledged_) {
      dropped_ += last - std::max(acknowledged_, oldest->first - 1);
      acknowledged_ = last;  // gone: the exporter must not look for them
    }
    total_bytes_ -= oldest->second;
    (void)unlink(segmentPath(oldest->first).c_str());
    segment_bytes_.erase(oldest);
  }
}

Result<std::vector<microseg::telemetry::v1::FlowRecord>> Spool::read(uint64_t after,
                                                                     size_t max_records) {
  std::vector<std::pair<uint64_t, uint64_t>> segments;  // first sequence, sequence after last
  {
    std::lock_guard lock(mutex_);
    for (auto it = segment_bytes_.begin(); it != segment_bytes_.end(); ++it) {
      auto next = std::next(it);
      const uint64_t end = next == segment_bytes_.end()
                               ? (queued_.empty() ? next_sequence_ : queued_first_)
                               : next->first;
      if (end > after + 1) {
        segments.emplace_back(it->first, end);
      }
    }
  }
  std::vector<microseg::telemetry::v1::FlowRecord> records;
  for (const auto& [first, end] : segments) {
    auto content = readFile(segmentPath(first));
    if (!content) {
      continue;  // dropped meanwhile
    }
    size_t complete = 0;
    auto frames = parseFrames(*content, complete);
    for (size_t index = 0; index < frames.size() && records.size() < max_records; index++) {
      if (first + index <= after) {
        continue;
      }
      microseg::telemetry::v1::FlowRecord record;
      if (!record.ParseFromArray(frames[index].data(), static_cast<int>(frames[index].size()))) {
        return Error(EIO, "corrupt record in spool segment " + segmentPath(first));
      }
      records.push_back(std::move(record));
    }
    if (records.size() >= max_records) {
      break;
    }
  }
  return records;
}

Status Spool::acknowledge(uint64_t sequence) {
  std::lock_guard lock(mutex_);
  acknowledged_ = std::max(acknowledged_, sequence);
  while (!segment_bytes_.empty()) {
    auto oldest = segment_bytes_.begin();
    auto next = std::next(oldest);
    const uint64_t last = next == segment_bytes_.end()
                              ? (queued_.empty() ? next_sequence_ : queued_first_) - 1
                              : next->first - 1;
    if (last > acknowledged_ || oldest->second == 0) {
      break;
    }
    if (oldest->first == segment_first_ && segment_fd_ >= 0) {
      close(segment_fd_);
      segment_fd_ = -1;
    }
    total_bytes_ -= oldest->second;
    (void)unlink(segmentPath(oldest->first).c_str());
    segment_bytes_.erase(oldest);
  }
  return persistState();
}

uint64_t Spool::acknowledged() const {
  std::lock_guard lock(mutex_);
  return acknowledged_;
}

uint64_t Spool::nextSequence() const {
  std::lock_guard lock(mutex_);
  return next_sequence_;
}

uint64_t Spool::droppedTotal() const {
  std::lock_guard lock(mutex_);
  return dropped_;
}

uint64_t Spool::pendingRecords() const {
  std::lock_guard lock(mutex_);
  return next_sequence_ - 1 - acknowledged_;
}

}  // namespace mseg::agent
