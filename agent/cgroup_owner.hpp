// Who else enforces on a cgroup: microseg programs that a pin directory other than ours keeps
// attached. Two agents on one cgroup would both judge every connection (the stricter policy
// wins) and split the counters and flow records between them, so an agent refuses to start
// there. Found from the kernel (BPF_PROG_QUERY), not from a lock file.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include <linux/bpf.h>

#include "mseg/result.hpp"

namespace mseg::agent {

// Every cgroup attach type microseg's programs use (bpf/microseg.bpf.c), the ones queried.
inline constexpr std::array<bpf_attach_type, 7> kMicrosegAttachTypes = {
    BPF_CGROUP_INET4_CONNECT, BPF_CGROUP_INET6_CONNECT, BPF_CGROUP_UDP4_SENDMSG,
    BPF_CGROUP_UDP6_SENDMSG,  BPF_CGROUP_INET_EGRESS,   BPF_CGROUP_INET_INGRESS,
    BPF_CGROUP_SOCK_OPS};

// Fails with EEXIST, naming the cgroup, the other pin directory and what to do, when programs
// of microseg are attached directly to the cgroup at `cgroup_path` and are not the ones the
// links pinned in `pin_dir` run (those are taken over by the agent of `pin_dir`). Other
// programs (systemd's, say) are no conflict. Reads only; safe to call before anything is
// created. Programs are recognised by the pin directories on bpffs that hold their links and,
// with CAP_SYS_ADMIN, by their name (mseg_*).
// LIMITATION: only programs attached to this very cgroup count; an agent on a parent or child
// cgroup of another agent's is not refused, and both judge the traffic of the cgroups below.
Status checkNoOtherAgentOnCgroup(const std::string& cgroup_path, const std::string& pin_dir);

}  // namespace mseg::agent
