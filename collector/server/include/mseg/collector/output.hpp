// Where stored records go: the interface every output implements.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "microseg/telemetry/v1/telemetry.pb.h"
#include "mseg/result.hpp"

namespace mseg::collector {

using FlowRecord = ::microseg::telemetry::v1::FlowRecord;

// Counters of one output; all monotonic except `queued`.
struct OutputStats {
  uint64_t records = 0;           // records written (files) or sent (syslog)
  uint64_t errors = 0;            // failed writes (files) or broken connections (syslog)
  uint64_t queued = 0;            // syslog: messages waiting to be sent
  uint64_t queue_overflow = 0;    // syslog: messages dropped because the queue was full
  uint64_t reconnects = 0;        // syslog: connections opened after the first
  uint64_t connect_failures = 0;  // syslog: connection attempts that failed
  uint64_t rotations = 0;         // files: rotations done
  bool connected = false;         // syslog: whether a connection is up now
};

class Output {
public:
  virtual ~Output() = default;

  virtual const std::string& name() const = 0;

  // Whether an acknowledgement waits for this output: a durable output has a record once
  // write() returned; a forwarding one (syslog) has only queued it.
  virtual bool durable() const = 0;

  // Takes `records`, all of one agent, in sequence order. A durable output returns once they
  // are written (and flushed per its policy) and on failure leaves none of them behind, so that
  // the agent's retry does not duplicate any. Thread-safe.
  virtual Status write(std::span<const FlowRecord* const> records) = 0;

  // Stops background work, giving queued messages until `deadline_ms` from now to leave. The
  // output takes no writes afterwards.
  virtual void stop(uint32_t deadline_ms) = 0;

  virtual OutputStats stats() const = 0;
};

}  // namespace mseg::collector
