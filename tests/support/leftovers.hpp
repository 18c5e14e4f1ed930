// Removing what killed test processes left behind. A test process that dies by SIGKILL (a ctest
// timeout, the OOM killer) runs no destructors, so its namespaces, cgroups, pins and temporary
// files would stay forever; the next test process removes them.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string_view>

namespace mseg::testing {

// The pid in a name this library hands out ("mseg-t-<pid>-<n>..."), or nullopt when `name` is
// not such a name.
std::optional<pid_t> ownerOfTestName(std::string_view name);

// Removes every object named `mseg-t-<pid>-*` whose pid is not a running process: it kills the
// processes left in its cgroups below `<cgroup2 mount>/microseg-test/`, detaches and unpins its
// pin directories under /sys/fs/bpf (with `microsegctl uninstall`), deletes its network
// namespaces, removes its cgroups deepest first and its files in the temporary directory. Writes
// one line per removed object to stderr; objects of running pids and names without the prefix
// are never touched. Does nothing unless run as root. Not thread-safe; forks.
void sweepLeftoversOfDeadTestProcesses();

// Runs sweepLeftoversOfDeadTestProcesses() the first time it is called in this process.
void sweepLeftoversOnce();

}  // namespace mseg::testing
