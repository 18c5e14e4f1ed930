// Datapath options: switches in the pinned mseg_opts_v1 map that change what the loaded
// programs do at once, without reloading or re-attaching them. Being pinned, an option holds
// while no agent runs and is what the next agent finds.
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <cerrno>

#include "datapath.hpp"
#include "microseg.skel.h"
#include "mseg/unique_fd.hpp"

namespace mseg::agent {

Result<bool> Datapath::setFlowTelemetry(bool enabled) {
  const int fd = bpf_map__fd(skeleton_->maps.mseg_opts_v1);
  uint32_t zero = 0;
  mseg_options options{};
  if (bpf_map_lookup_elem(fd, &zero, &options) != 0) {
    return Error::fromErrno(errno, "read datapath options");
  }
  const bool was_enabled = (options.flags & MSEG_OPT_NO_TELEMETRY) == 0;
  if (enabled) {
    options.flags &= ~MSEG_OPT_NO_TELEMETRY;
  } else {
    options.flags |= MSEG_OPT_NO_TELEMETRY;
  }
  if (bpf_map_update_elem(fd, &zero, &options, BPF_ANY) != 0) {
    return Error::fromErrno(errno, "write datapath options");
  }
  return was_enabled;
}

Status Datapath::detachSockOps() {
  // attach() pins every program's link as link_<program name>.
  const std::string path = options_.pin_dir + "/link_mseg_sockops";
  UniqueFd link(bpf_obj_get(path.c_str()));
  if (link.get() < 0) {
    return errno == ENOENT ? Status{} : Error::fromErrno(errno, "open pinned link " + path);
  }
  // Detaching works whoever else holds the link open (our own bpf_link included).
  if (bpf_link_detach(link.get()) != 0) {
    return Error::fromErrno(errno, "detach the sock_ops program");
  }
  if (unlink(path.c_str()) != 0) {
    return Error::fromErrno(errno, "unpin " + path);
  }
  return {};
}

}  // namespace mseg::agent
