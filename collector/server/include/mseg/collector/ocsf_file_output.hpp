// The ocsf_file output: one OCSF JSON object per line, with size-based rotation.
#pragma once

#include <memory>
#include <mutex>

#include "mseg/collector/config.hpp"
#include "mseg/collector/output.hpp"

namespace mseg::collector {

class OcsfFileOutput final : public Output {
public:
  // Opens (creating, mode 0640) the file for appending; creates its directory when missing.
  static Result<std::unique_ptr<OcsfFileOutput>> open(const OcsfFileOutputConfig& config);
  ~OcsfFileOutput() override;

  const std::string& name() const override { return config_.name; }
  bool durable() const override { return true; }

  // Appends one line per record. When the batch would grow the file past max_bytes, the file
  // is rotated first (path -> path.1 -> ... -> path.<keep>, the oldest removed), so a batch
  // never spans two files. On a failed write the file is truncated back to where the batch
  // began. With fsync `batch` the data is on disk when this returns.
  Status write(std::span<const FlowRecord* const> records) override;

  void stop(uint32_t deadline_ms) override;
  OutputStats stats() const override;

private:
  explicit OcsfFileOutput(OcsfFileOutputConfig config) : config_(std::move(config)) {}
  Status openFile();
  Status rotate();

  const OcsfFileOutputConfig config_;
  mutable std::mutex mutex_;  // guards everything below
  int fd_ = -1;
  uint64_t size_ = 0;
  OutputStats stats_;
};

}  // namespace mseg::collector
