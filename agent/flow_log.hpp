// The local flow log: one OCSF JSON line per flow record, rotated by size. It is the default
// export when no collector is configured, and what SIEM agents (Filebeat, the Splunk forwarder,
// Fluent Bit) tail on the host.
#pragma once

#include <cstdint>
#include <string>

#include "microseg/telemetry/v1/telemetry.pb.h"
#include "mseg/result.hpp"

namespace mseg::agent {

class FlowLog {
public:
  // Appends to `path`; when it would grow past `max_bytes` it becomes path.1 (path.1 becomes
  // path.2 ... up to `keep` files; the oldest is removed).
  static Result<FlowLog> open(std::string path, uint64_t max_bytes, unsigned keep);
  FlowLog(FlowLog&& other) noexcept;
  FlowLog& operator=(FlowLog&& other) noexcept;
  FlowLog(const FlowLog&) = delete;
  FlowLog& operator=(const FlowLog&) = delete;
  ~FlowLog();

  // Adds the record as one line. Lines reach the file whole, in batches: a reader tailing it
  // never sees half a line. Fails when a flush or rotation it needed failed (disk full); the
  // records lost are counted in recordsDropped().
  Status write(const microseg::telemetry::v1::FlowRecord& record);
  // Writes the batched lines; called once per tick, and by write() when the batch is large. On
  // a write error the lines that reached the file whole stay, a torn last line is cut off the
  // file again, and every other line of the batch is dropped and counted: nothing is retried,
  // so the batch cannot grow without bound while the disk stays full. The next flush tries
  // again (and reopens the file if it had to be closed).
  Status flush();

  // Records that reached the file, and records lost on the way, since open().
  uint64_t recordsWritten() const { return records_written_; }
  uint64_t recordsDropped() const { return records_dropped_; }
  // True from a failed write until a later flush writes records again.
  bool failing() const { return failing_; }

private:
  FlowLog(std::string path, uint64_t max_bytes, unsigned keep)
      : path_(std::move(path)), max_bytes_(max_bytes), keep_(keep) {}
  Status reopen();
  Status rotate();
  Status dropBatch(size_t written, Error error);
  void close();

  std::string path_;
  uint64_t max_bytes_;
  unsigned keep_;
  int fd_ = -1;
  uint64_t size_ = 0;     // of the file, including the batch
  std::string batch_;     // whole lines only
  uint64_t batch_records_ = 0;
  uint64_t records_written_ = 0;
  uint64_t records_dropped_ = 0;
  bool failing_ = false;
};

}  // namespace mseg::agent
