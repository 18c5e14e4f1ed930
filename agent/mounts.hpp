// Where the kernel's cgroup v2 hierarchy and BPF filesystem are mounted on this host. Neither
// is at a fixed place: hybrid systemd hosts mount cgroup v2 at /sys/fs/cgroup/unified, and
// containers or minimal systems may not mount bpffs at all.
#pragma once

#include <string>

#include "mseg/result.hpp"

namespace mseg::agent {

// The first cgroup2 mount point in /proc/mounts.
Result<std::string> findCgroup2Mount();

// The bpffs mount containing `pin_dir`: if /sys/fs/bpf is not a bpffs mount, mounts one there
// (needs CAP_SYS_ADMIN). Then creates `pin_dir` (mode 0700) if missing, with its missing
// parents, and records in it how many parents it created, for removePinDirectory.
Status ensureBpffs(const std::string& pin_dir);

// Removes `pin_dir`, which must hold nothing of microseg's any more, and then the parents that
// ensureBpffs created for it, innermost first, each only while it is empty. Fails, keeping
// `pin_dir`, when it holds other files.
Status removePinDirectory(const std::string& pin_dir);

// Whether `path` lies on a filesystem of type bpffs.
bool onBpffs(const std::string& path);

}  // namespace mseg::agent
