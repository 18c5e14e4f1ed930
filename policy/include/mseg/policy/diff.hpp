// What changes when one compiled policy replaces another: rules added, removed or changed, and
// the workload-to-peer traffic whose verdict changes. Computed from the verdict entries the
// kernel would hold, not from the text, so reordering or reformatting a file shows no change
// and a rule that another rule now overrides does.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mseg/policy/compiled.hpp"

namespace mseg::policy {

struct RuleChange {
  enum class Kind : uint8_t { Added, Removed, Changed };
  Kind kind = Kind::Added;
  std::string rule;                      // "segment/rule"
  Verdict old_verdict = Verdict::None;   // None when added
  Verdict new_verdict = Verdict::None;   // None when removed
  std::string location;                  // file:line:column, in the new policy if it is there
  std::string detail;                    // for Changed: what differs
};

// The traffic classes a path change is about. Other: every IP protocol but these four.
enum class PathProtocol : uint8_t { Any, Tcp, Udp, Icmp, Icmpv6, Other };

const char* pathProtocolName(PathProtocol protocol);

// One range of traffic whose verdict differs. Verdict::None means "unmanaged": that direction
// of the workload is not judged, so the traffic passes.
struct PathChange {
  std::string workload;
  std::string peer;  // inventory name, "world", or "any" for every peer not listed by itself
  Direction direction = Direction::Egress;
  PathProtocol protocol = PathProtocol::Any;
  uint16_t first_port = 0;  // ICMP: types; Any and Other: 0
  uint16_t last_port = 0;
  Verdict old_verdict = Verdict::None;
  Verdict new_verdict = Verdict::None;
  std::string old_rule;  // the deciding rule's name; "(default deny)"; empty when unmanaged
  std::string new_rule;

  // Blocked before and passes now (allow, audit or unmanaged).
  bool opens() const;
  // Passed before and is blocked now.
  bool closes() const;
};

// A cgroup of this host that belongs to another workload under the proposed policy: the
// workload that selects it, else the one of its deepest selected ancestor, as in the kernel. An
// empty name means none: it is unmanaged.
struct CgroupChange {
  std::string cgroup;  // relative to the attach cgroup ("" is that cgroup itself)
  std::string old_workload;
  std::string new_workload;
  // Cgroups below this one with the same change, folded into this line.
  uint32_t cgroups_below = 0;
};

struct PolicyDiff {
  std::vector<RuleChange> rules;      // by rule name
  std::vector<CgroupChange> cgroups;  // by cgroup path
  // Workloads of the running policy that the proposed one lacks and that some rule managed.
  // Their traffic is told by `cgroups` (what selects their cgroups now) instead of `paths`.
  std::vector<std::string> removed_workloads;
  std::vector<PathChange> paths;  // by workload, direction, peer, protocol, port
};

// Compares `running` with `proposed` on a host whose cgroups are `cgroups` (paths relative to
// the attach cgroup). Workloads and peers are matched by name, so renumbered identities do not
// count as changes. A peer that behaves exactly like the `any` row in both policies is not
// listed by itself. A removed workload gets no path changes: its cgroups now belong to another
// workload (whose paths are listed) or to none. Pure computation; thread-safe for distinct
// arguments.
PolicyDiff diffPolicies(const CompiledPolicy& running, const CompiledPolicy& proposed,
                        const std::vector<std::string>& cgroups = {});

}  // namespace mseg::policy
