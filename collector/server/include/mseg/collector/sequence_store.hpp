// The collector's memory of what it stored, per agent: the highest sequence number every file
// output has, which makes delivery exactly once across reconnects and collector restarts.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "mseg/result.hpp"

namespace mseg::collector {

struct AgentMark {
  uint64_t sequence = 0;       // highest stored sequence; 0 when nothing was stored yet
  uint64_t dropped_total = 0;  // the agent's own drop count when last reported

  bool operator==(const AgentMark&) const = default;
};

// One small text file per agent in a state directory, replaced atomically (write a temporary
// file, fsync it, rename it over the old one, fsync the directory), so that after a crash a
// file holds either the old or the new mark, never a torn one.
//
// Thread safety: calls for different agents may run concurrently; calls for one agent must be
// serialised by the caller (the collector holds that agent's lock around them).
class SequenceStore {
public:
  // Creates `dir` (mode 0700) when missing and checks that it is a writable directory.
  static Result<SequenceStore> open(std::filesystem::path dir);

  // The stored mark of `agent_id` (compared by canonicalHostName), or a zero mark when none is
  // stored. Fails on an unreadable or malformed state file, naming it: starting that agent
  // from zero would write its records again.
  Result<AgentMark> load(std::string_view agent_id) const;

  // Durably replaces the mark of `agent_id`; on failure the old mark stays in place.
  Status save(std::string_view agent_id, const AgentMark& mark) const;

  // The state file of `agent_id`: "agent-<name>.state" with the canonical name, any byte
  // outside [a-z0-9.-_] percent-encoded so that no id can escape the directory.
  std::filesystem::path pathFor(std::string_view agent_id) const;

  const std::filesystem::path& dir() const { return dir_; }

private:
  explicit SequenceStore(std::filesystem::path dir) : dir_(std::move(dir)) {}

  std::filesystem::path dir_;
};

}  // namespace mseg::collector
