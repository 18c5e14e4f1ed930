#include "capabilities.hpp"

#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>

namespace mseg::agent {
namespace {

// Not in Debian 12's libc headers for every architecture: the kernel's numbers (5.8+).
constexpr int kCapNetAdmin = 12;
constexpr int kCapPerfmon = 38;
constexpr int kCapBpf = 39;

bool hasEffective(const __user_cap_data_struct (&data)[2], int capability) {
  return (data[capability / 32].effective >> (capability % 32)) & 1u;
}

}  // namespace

std::vector<std::string> missingCapabilities() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (syscall(SYS_capget, &header, data) != 0) {
    return {};  // cannot tell; loading will say
  }
  std::vector<std::string> missing;
  if (!hasEffective(data, kCapBpf)) {
    missing.emplace_back("CAP_BPF");
  }
  if (!hasEffective(data, kCapNetAdmin)) {
    missing.emplace_back("CAP_NET_ADMIN");
  }
  if (!hasEffective(data, kCapPerfmon)) {
    missing.emplace_back("CAP_PERFMON");
  }
  return missing;
}

}  // namespace mseg::agent
