// The policy file (format v1, see docs/policy.md) as written: names, labels and selectors with
// the place each came from. The compiler turns it into numbers (compiled.hpp).
#pragma once

#include <cstdint>
#include <memory>
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
  std::string source;  // the file it was read from, as diagnostics name it
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
  std::string source;  // the file it was read from
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
  std::string source;  // the file it was read from; its rules' positions are in that file
  Position position;
  Mode mode = Mode::Enforce;
  std::vector<RuleSpec> rules;
};

// One parsed and validated policy file. A policy is one file, or a directory of them each
// parsed on its own (mseg/policy/source.hpp). Immutable once built and shared: a loader hands
// out the same PolicyFile again for as long as the file's content does not change, so a
// consumer can tell what changed between two loads by comparing pointers.
struct PolicyFile {
  std::string path;          // as diagnostics name it: the policy path, or directory/name
  std::string content_hash;  // hex SHA-256 of the file's text
  std::vector<WorkloadSpec> workloads;
  std::vector<InventorySpec> inventory;
  std::vector<std::shared_ptr<const SegmentSpec>> segments;
};

// A whole policy: its files merged in load order. Segments are shared with the files (and
// with earlier loads whose files did not change) rather than copied; workloads and inventory
// entries are few and copied.
struct Policy {
  std::string source_name;   // the path as configured: a file or a directory
  // A file: hex SHA-256 of its text; a directory: policyDirectoryHash (source.hpp).
  std::string content_hash;
  std::vector<std::shared_ptr<const PolicyFile>> files;  // in load order
  std::vector<WorkloadSpec> workloads;
  std::vector<InventorySpec> inventory;
  std::vector<std::shared_ptr<const SegmentSpec>> segments;
};

// Parses and validates a policy text. Every problem found goes to `out` as an error or a
// warning naming file:line:column; the result fails (EINVAL, "N errors") when there was at
// least one error, so a returned Policy is always valid. Host-specific checks (users, what
// rules select here) happen in compilePolicy. The same as parsePolicyFile then
// mergePolicyFiles of that one file. Thread-safe for distinct arguments.
Result<Policy> parsePolicy(std::string_view text, std::string_view source_name, Diagnostics& out);

// Parses one file of a policy and makes every check that needs only this file (syntax, fields,
// values, names and CIDRs used twice within it). Checks across files are mergePolicyFiles's.
// `path` names the file in diagnostics. Fails (EINVAL, "N errors") after reporting to `out`.
// Thread-safe for distinct arguments: a loader parses several files at once.
Result<std::shared_ptr<const PolicyFile>> parsePolicyFile(std::string_view text,
                                                          std::string_view path,
                                                          Diagnostics& out);

// Concatenates the workloads, inventory and segments of `files` in order and makes the checks
// across files: a workload, inventory entry or segment name, or a CIDR, defined in two files
// (reported at the later place, naming the first as file:line:column), and selector label keys
// that no workload or inventory entry of any file defines. `content_hash` is left empty for the
// caller. With `previous` (an earlier result of this function; only its `files` are read)
// whose label keys are all still defined, the segments of files that `previous` holds too are
// not checked again, so a merge after a change to one file costs in proportion to that file
// and the number of segments, not of rules.
// Fails (EINVAL, "N errors") after reporting to `out`. Thread-safe for distinct arguments.
Result<Policy> mergePolicyFiles(const std::vector<std::shared_ptr<const PolicyFile>>& files,
                                std::string_view source_name, Diagnostics& out,
                                const Policy* previous = nullptr);

// Hex SHA-256 of `text`.
std::string sha256Hex(std::string_view text);

}  // namespace mseg::policy
