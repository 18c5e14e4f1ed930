// The compiled form of a policy: numeric identities and verdict entries, exactly what the agent
// writes into the kernel's maps. Labels and names stay here, in userspace; the kernel only ever
// sees numbers.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace mseg::policy {

using Labels = std::map<std::string, std::string>;

enum class Direction : uint8_t { Egress = 0, Ingress = 1 };

// Ordered by precedence: when several entries match, the highest wins, so deny beats audit
// (would deny) beats allow. Values match MSEG_VERDICT_* in bpf/include/mseg/abi.h.
enum class Verdict : uint8_t { None = 0, Allow = 1, Audit = 2, Deny = 3 };

// IP protocol numbers as on the wire; Any matches every protocol.
enum class Protocol : uint8_t { Any = 0, Icmp = 1, Tcp = 6, Udp = 17, Icmpv6 = 58 };

// Reserved peer identities. Inventory entries are numbered from kFirstPeerIdentity.
inline constexpr uint32_t kPeerAny = 0;    // a rule whose peer selector is `any`
inline constexpr uint32_t kPeerWorld = 1;  // an address no inventory entry covers
inline constexpr uint32_t kFirstPeerIdentity = 16;
inline constexpr uint32_t kFirstWorkloadIdentity = 1;

// Reserved rule indices. Policy rules are numbered from kFirstRuleIndex in file order.
inline constexpr uint32_t kRuleNone = 0;
inline constexpr uint32_t kRuleDefaultDeny = 1;
inline constexpr uint32_t kFirstRuleIndex = 2;

inline constexpr uint32_t kAnyUid = 0xffffffffu;

struct CompiledWorkload {
  uint32_t id = 0;
  std::string name;
  Labels labels;
  std::vector<std::string> cgroup_patterns;  // relative to the attach cgroup; may hold globs
  std::vector<uint32_t> uids;                // empty: any user
  std::vector<std::string> unresolved_users;  // user names this host does not know (warned)
  bool egress_managed = false;   // some rule selects it as a source: default deny on egress
  bool ingress_managed = false;  // some rule selects it as a destination: default deny on ingress
  bool egress_audit = false;     // its egress default deny only reports (all selecting rules audit)
  bool ingress_audit = false;
};

struct CompiledPeer {
  uint32_t id = 0;
  std::string name;
  Labels labels;
};

// One inventory prefix. IPv4 is stored IPv4-mapped (::ffff:a.b.c.d/96+n) so one trie serves
// both families.
struct PeerPrefix {
  std::array<uint8_t, 16> address{};
  uint8_t prefix_len = 0;  // 0..128, in the IPv6 space
  uint32_t peer_id = 0;
};

struct CompiledSegment {
  std::string name;
  bool audit = false;  // mode: audit (its deny rules and default deny only report)
  uint32_t rule_count = 0;
};

struct CompiledRule {
  uint32_t index = 0;
  std::string segment;
  std::string name;  // "segment/rule"
  Verdict verdict = Verdict::Allow;  // Allow, Audit (a deny rule in audit mode) or Deny
  std::string where;  // "file:line:column" of the rule
};

// A verdict entry, keyed like the kernel's LPM trie: direction, local workload, peer identity,
// protocol and port are matched exactly, except that protocol Any covers every protocol and
// port, and port_prefix_len < 16 covers a power-of-two aligned block of ports. For ICMP the
// port field holds the ICMP type. The compiler resolves precedence between overlapping
// entries of the same (direction, workload, peer): an entry's verdict is already the highest of
// every rule covering it, so the longest match is the answer.
struct VerdictEntry {
  Direction direction = Direction::Egress;
  uint32_t workload_id = 0;
  uint32_t peer_id = 0;
  Protocol protocol = Protocol::Any;
  uint16_t port = 0;  // host byte order; the agent converts
  uint8_t port_prefix_len = 16;  // ignored when protocol is Any
  Verdict verdict = Verdict::Allow;
  uint32_t rule_index = 0;
};

struct CompiledPolicy {
  std::string source_name;
  std::string content_hash;  // hex SHA-256 of the policy text
  std::vector<CompiledWorkload> workloads;
  std::vector<CompiledPeer> peers;
  std::vector<PeerPrefix> prefixes;
  std::vector<CompiledSegment> segments;  // in file order
  std::vector<CompiledRule> rules;  // rules[i].index == i + kFirstRuleIndex
  std::vector<VerdictEntry> entries;
};

// The answer of the userspace model of the kernel's lookup (used by tests and `policy trace`).
struct Decision {
  Verdict verdict = Verdict::None;  // None: the workload is not managed in that direction
  uint32_t rule_index = kRuleNone;
};

// Decides like the kernel does: look up (workload, peer) and (workload, any peer), take the
// highest verdict; if nothing matches and the workload is managed in that direction, its
// default deny (Deny, or Audit when that direction is audit-only) with kRuleDefaultDeny.
Decision decide(const CompiledPolicy& policy, Direction direction, uint32_t workload_id,
                uint32_t peer_id, Protocol protocol, uint16_t port);

// decide() for one workload among entries already picked out: `exact_peer` holds the entries of
// (direction, workload, peer), `any_peer` those of (direction, workload, kPeerAny). A protocol
// value no entry names (e.g. 255) stands for every other protocol.
Decision decideAmong(const CompiledWorkload& workload, Direction direction,
                     const std::vector<const VerdictEntry*>& exact_peer,
                     const std::vector<const VerdictEntry*>& any_peer, Protocol protocol,
                     uint16_t port);

// The peer identity of an address, most specific prefix first; kPeerWorld when none covers it.
uint32_t peerIdentityOf(const CompiledPolicy& policy, const std::array<uint8_t, 16>& address);

}  // namespace mseg::policy
