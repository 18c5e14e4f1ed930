#include "support/privileged.hpp"

#include <unistd.h>

#include <cstdlib>
#include <string_view>

#include "support/cgroup.hpp"
#include "support/subprocess.hpp"

namespace mseg::testing {

std::optional<std::string> privilegeProblem() {
  if (geteuid() != 0) {
    return "needs root (network namespaces, cgroups, raw sockets)";
  }
  if (auto mount = findCgroup2Mount(); !mount) {
    return "needs a cgroup v2 mount: " + mount.error().message();
  }
  if (auto ip = runCommand({"ip", "-V"}); !ip || ip->status != 0) {
    return std::string("needs iproute2's ip in PATH");
  }
  return std::nullopt;
}

bool runningInCi() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string_view(ci) == "true";
}

}  // namespace mseg::testing
