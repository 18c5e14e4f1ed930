// Limits of the control socket that microsegctl and the agent share. Documented for operators
// in docs/agent.md ("The control socket").
#pragma once

#include <cstddef>

namespace mseg::agent {

// The largest `policy diff` request: the policy's text, all files of a directory together.
// 100,000 rules are 12 to 20 MB of YAML, and compiling a policy takes about ten times its
// size in memory, so this bounds what one caller can make the agent allocate.
inline constexpr size_t kMaxDiffRequestBytes = size_t{32} << 20;

// The largest reply: a status with every rule counter, a diff of 10,000 path changes.
inline constexpr size_t kMaxReplyBytes = size_t{256} << 20;

// Flow records the agent keeps in memory for `microsegctl flows`; a follower that reads slower
// than records come misses those that leave this ring before it reads them, and is told so.
inline constexpr size_t kRecentFlows = 4096;

// Callers of `flows --follow` served at once. Each holds one of the control server's threads
// for as long as it follows; past this many, more are refused so that short calls always find
// a thread.
inline constexpr int kMaxFollowers = 8;

// `policy diff` calls the agent takes at once: it compiles one at a time (so concurrent diffs
// cannot add up in memory) and the others wait their turn, each on a thread of its own.
inline constexpr int kMaxDiffsAdmitted = 4;

}  // namespace mseg::agent
