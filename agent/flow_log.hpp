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
  // never sees half a line. Fails on a write error (disk full): the caller counts it.
  Status write(const microseg::telemetry::v1::FlowRecord& record);
  // Writes the batched lines; called once per tick, and by write() when the batch is large.
  Status flush();

private:
  FlowLog(std::string path, uint64_t max_bytes, unsigned keep)
      : path_(std::move(path)), max_bytes_(max_bytes), keep_(keep) {}
  Status reopen();
  Status rotate();

  std::string path_;
  uint64_t max_bytes_;
  unsigned keep_;
  int fd_ = -1;
  uint64_t size_ = 0;     // of the file, including the batch
  std::string batch_;
};

}  // namespace mseg::agent
