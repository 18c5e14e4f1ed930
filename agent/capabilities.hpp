// The capabilities microsegd needs, checked at start so a missing one is named instead of
// surfacing as EPERM from deep inside libbpf.
#pragma once

#include <string>
#include <vector>

namespace mseg::agent {

// The smallest set that works, found by running the agent under setpriv with a reduced
// bounding set (EnforcementPrivilegedTest.EnforcesWithMinimalCapabilities): CAP_BPF to load
// programs and create maps, CAP_NET_ADMIN to load and attach cgroup networking programs, and
// CAP_PERFMON because flow telemetry reads the calling task's command name
// (bpf_get_current_comm is refused to socket programs without it). CAP_SYS_ADMIN is needed
// only to mount bpffs when it is not mounted yet.
std::vector<std::string> missingCapabilities();

}  // namespace mseg::agent
