// Helpers of the collector's unit and integration tests: a temporary directory and flow records.
#pragma once

#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <string>

#include "microseg/telemetry/v1/telemetry.pb.h"

namespace mseg::collector::testing {

// A directory of its own for one test, removed with everything in it when the test ends.
class TempDir {
public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "mseg-collector-XXXXXX");
    if (mkdtemp(pattern.data()) != nullptr) {
      path_ = pattern;
    }
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }

  // Empty when mkdtemp failed; tests assert on it first.
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

private:
  std::filesystem::path path_;
};

// A plausible egress record of `host` (its agent_id too) numbered `sequence`: 198.18.0.1:40000
// to 198.18.0.2:5432 over TCP, allowed.
inline microseg::telemetry::v1::FlowRecord makeRecord(const std::string& host, uint64_t sequence) {
  microseg::telemetry::v1::FlowRecord record;
  record.set_agent_id(host);
  record.set_host(host);
  record.set_sequence(sequence);
  record.set_record_id(host + "-" + std::to_string(sequence));
  record.set_event(microseg::telemetry::v1::FLOW_EVENT_START);
  record.set_time_unix_nano(1'700'000'000'000'000'000 + sequence * 1'000'000);
  record.set_start_unix_nano(record.time_unix_nano());
  record.set_direction(microseg::telemetry::v1::DIRECTION_EGRESS);
  record.set_ip_version(4);
  record.set_protocol(6);
  record.set_local_address(std::string("\xc6\x12\x00\x01", 4));
  record.set_local_port(40000);
  record.set_peer_address(std::string("\xc6\x12\x00\x02", 4));
  record.set_peer_port(5432);
  record.set_verdict(microseg::telemetry::v1::VERDICT_ALLOW);
  record.set_rule("erp-core/app-to-db");
  return record;
}

// A request carrying records `first` to `last` of `host`.
inline microseg::telemetry::v1::ExportRequest makeBatch(const std::string& host, uint64_t first,
                                                        uint64_t last, uint64_t dropped_total = 0) {
  microseg::telemetry::v1::ExportRequest request;
  for (uint64_t sequence = first; sequence <= last; ++sequence) {
    *request.add_records() = makeRecord(host, sequence);
  }
  request.set_dropped_total(dropped_total);
  return request;
}

}  // namespace mseg::collector::testing
