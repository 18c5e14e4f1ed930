// The policy file (format v1, see docs/policy.md) as written: names, labels and selectors with
// the place each came from. The compiler turns it into numbers (compiled.hpp).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mseg/policy/address.hpp"
#include "mseg/policy/compiled.hpp"
#include "mseg/policy/diagnostics.hpp"
#include "mseg/result.hpp"

namespace mseg::policy {

inline constexpr uint64_t kPolicyVersion = 1;

enum class Mode : uint8_t { Enforce, Audit };
enum class Action : uint8_t { Allow, Deny };

// A user of a workload, by name (resolved on each host when compiling) or by number.
struct UserSpec {
  std::string name;             // empty when given as a uid
  std::optional<uint32_t> uid;  // set when given as a number
  Position position;
};

struct WorkloadSpec {
  std::string name;
  Position position;
  std::vector<std::string> cgroups;  // relative to the attach cgroup; fnmatch globs allowed
  std::vector<UserSpec> users;       // empty: any user
  Labels labels;
};

struct CidrSpec {
  Cidr cidr;
  std::string text;  // as written, for messages
  Position position;
};

struct InventorySpec {
  std::string name;
  Position position;
  std::vector<CidrSpec> cidrs;
  Labels labels;
};

// One `key: value` (or `key: [v1, v2]`, meaning any of them) of a label selector.
struct LabelRequirement {
  std::string key;
  std::vector<std::string> values;
  Position position;  // of the key
};

enum class SelectorKind : uint8_t { Labels, Any, World };

struct Selector {
  SelectorKind kind = SelectorKind::Labels;
  std::vector<LabelRequirement> requirements;  // all must hold; Labels only
  Position position;
};

// Matches when every requirement's key is in `labels` with one of its values.
bool selectorMatches(const Selector& selector, const Labels& labels);

struct PortRange {
  uint16_t first = 0;
  uint16_t last = 0;  // inclusive
};

struct RuleSpec {
  std::string name;
  Position position;
  Action action = Action::Allow;
  std::optional<Mode> mode;  // unset: the segment's
  Selector from;
  Selector to;
  Protocol protocol = Protocol::Any;
  std::vector<PortRange> ports;     // tcp and udp only; empty: every port
  std::vector<uint8_t> icmp_types;  // icmp and icmpv6 only; empty: every type
};

struct SegmentSpec {
  std::string name;
  Position position;
  Mode mode = Mode::Enforce;
  std::vector<RuleSpec> rules;
};

struct Policy {
  std::string source_name;
  std::string content_hash;  // hex SHA-256 of the text
  std::vector<WorkloadSpec> workloads;
  std::vector<InventorySpec> inventory;
  std::vector<SegmentSpec> segments;
};

// Parses and validates a policy text. Every problem found goes to `out` as an error or a
// warning naming file:line:column; the result fails (EINVAL, "N errors") when there was at
// least one error, so a returned Policy is always valid. Host-specific checks (users, what
// rules select here) happen in compilePolicy. Thread-safe for distinct arguments.
Result<Policy> parsePolicy(std::string_view text, std::string_view source_name, Diagnostics& out);

// Hex SHA-256 of `text`.
std::string sha256Hex(std::string_view text);

}  // namespace mseg::policy
