#include "ctl_client.hpp"

#include <grp.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <vector>

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include "control_limits.hpp"
#include "mseg/unique_fd.hpp"

namespace mseg::ctl {
namespace {

// Compiling and diffing a 100,000-rule policy takes the agent seconds on a small host.
constexpr auto kDiffDeadline = std::chrono::seconds(120);
constexpr auto kCallDeadline = std::chrono::seconds(30);

std::string groupName(gid_t gid) {
  group entry{};
  group* found = nullptr;
  std::vector<char> buffer(16384);
  if (getgrgid_r(gid, &entry, buffer.data(), buffer.size(), &found) == 0 && found != nullptr) {
    return found->gr_name;
  }
  return std::to_string(gid);
}

Error noAgent(const std::string& path) {
  return Error(ENOENT,
               "no agent at " + path + " (is microsegd running? --socket to choose another)");
}

// `gid` owns what refused us: the socket, or the directory it lies in.
Error permissionDenied(const std::string& path, gid_t gid) {
  if (gid == 0) {
    return Error(EACCES, "permission denied on " + path +
                             ": run as root (the agent lets no group in; start it with "
                             "--control-group GROUP to allow one)");
  }
  return Error(EACCES, "permission denied on " + path + ": run as root or as a member of group " +
                           groupName(gid));
}

std::string userName(uid_t uid) {
  passwd entry{};
  passwd* found = nullptr;
  std::vector<char> buffer(16384);
  if (getpwuid_r(uid, &entry, buffer.data(), buffer.size(), &found) == 0 && found != nullptr) {
    return found->pw_name;
  }
  return std::to_string(uid);
}

// The socket could not even be looked at: a directory on its path does not let this user
// search it. That directory is named with its mode, owner and group, since neither the socket
// nor the agent's group is the obstacle, unless the directory's group would let its members in.
Error deniedByDirectory(const std::string& path) {
  std::filesystem::path directory;
  for (const auto& part : std::filesystem::path(path).parent_path()) {
    directory /= part;
    struct stat info {};
    if (access(directory.c_str(), X_OK) == 0) {
      continue;
    }
    if (stat(directory.c_str(), &info) != 0) {
      break;
    }
    if (info.st_gid != 0 && (info.st_mode & S_IXGRP) != 0) {
      return permissionDenied(path, info.st_gid);
    }
    return Error(EACCES, fmt::format("permission denied on {}: directory {} (mode {:04o}, owner "
                                     "{}, group {}) does not let you reach the socket; run as "
                                     "root, or make the directory searchable for the agent's "
                                     "control group (chgrp GROUP {}; chmod g+x {})",
                                     path, directory.string(), info.st_mode & 07777,
                                     userName(info.st_uid), groupName(info.st_gid),
                                     directory.string(), directory.string()));
  }
  return Error::fromErrno(EACCES, "cannot reach " + path);
}

void setDeadline(grpc::ClientContext& context, std::chrono::seconds after) {
  context.set_deadline(std::chrono::system_clock::now() + after);
}

}  // namespace

Status checkControlSocket(const std::string& socket_path) {
  struct stat info {};
  if (stat(socket_path.c_str(), &info) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return noAgent(socket_path);
    }
    if (errno == EACCES) {
      return deniedByDirectory(socket_path);
    }
    return Error::fromErrno(errno, "cannot reach " + socket_path);
  }
  if (!S_ISSOCK(info.st_mode)) {
    return Error(ENOTSOCK, socket_path + " is not a socket: give the agent's control socket with "
                                         "--socket");
  }

  sockaddr_un address{};
  if (socket_path.size() >= sizeof(address.sun_path)) {
    return Error::invalid("socket path " + socket_path + " is too long for a Unix socket");
  }
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, socket_path.c_str(), sizeof(address.sun_path) - 1);
  UniqueFd probe(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!probe) {
    return Error::fromErrno(errno, "create a Unix socket");
  }
  if (connect(probe.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) == 0) {
    return {};
  }
  if (errno == EACCES || errno == EPERM) {
    return permissionDenied(socket_path, info.st_gid);
  }
  if (errno == ECONNREFUSED) {
    return noAgent(socket_path);
  }
  return Error::fromErrno(errno, "connect to " + socket_path);
}

Result<ControlClient> ControlClient::connect(const std::string& socket_path) {
  if (auto usable = checkControlSocket(socket_path); !usable) {
    return usable.error();
  }
  ControlClient client(socket_path);
  grpc::ChannelArguments arguments;
  arguments.SetMaxReceiveMessageSize(static_cast<int>(agent::kMaxReplyBytes));
  // A larger request is refused before it is sent (diffPolicy); the agent would refuse it too.
  arguments.SetMaxSendMessageSize(static_cast<int>(agent::kMaxReplyBytes));
  auto channel = grpc::CreateCustomChannel("unix:" + socket_path,
                                           grpc::InsecureChannelCredentials(), arguments);
  client.stub_ = cv1::Control::NewStub(channel);
  return client;
}

Error ControlClient::callError(const grpc::Status& status) const {
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:  // the agent stopped between the check and the call
      return noAgent(socket_path_);
    case grpc::StatusCode::FAILED_PRECONDITION:  // starting, or flows with telemetry off
      return Error(EAGAIN, status.error_message());
    case grpc::StatusCode::NOT_FOUND:
      return Error(ENOENT, status.error_message());
    case grpc::StatusCode::INVALID_ARGUMENT:
      return Error(EINVAL, status.error_message());
    case grpc::StatusCode::RESOURCE_EXHAUSTED:  // too many callers of its kind, or too large
      return Error(EBUSY, "the agent at " + socket_path_ + " refused the call: " +
                              status.error_message());
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return Error(ETIMEDOUT, "the agent at " + socket_path_ + " did not answer in time");
    default:
      return Error(EIO, "the agent at " + socket_path_ + " failed the call: " +
                            status.error_message());
  }
}

template <typename Reply, typename Request, typename Method>
Result<Reply> ControlClient::call(Method method, const Request& request,
                                  std::chrono::seconds deadline) {
  grpc::ClientContext context;
  setDeadline(context, deadline);
  Reply reply;
  if (auto status = (stub_.get()->*method)(&context, request, &reply); !status.ok()) {
    return callError(status);
  }
  return reply;
}

Result<cv1::AgentStatus> ControlClient::status() {
  return call<cv1::AgentStatus>(&cv1::Control::Stub::GetStatus, cv1::GetStatusRequest{},
                                kCallDeadline);
}

Result<cv1::PolicyDiff> ControlClient::diffPolicy(const cv1::DiffPolicyRequest& request) {
  if (const size_t size = request.ByteSizeLong(); size > agent::kMaxDiffRequestBytes) {
    return Error(EFBIG, fmt::format("policy {} is {:.1f} MiB; the agent compares policies of at "
                                    "most {} MiB (`microsegctl policy validate` checks larger "
                                    "ones without the agent)",
                                    request.source_name(), static_cast<double>(size) / (1 << 20),
                                    agent::kMaxDiffRequestBytes >> 20));
  }
  return call<cv1::PolicyDiff>(&cv1::Control::Stub::DiffPolicy, request, kDiffDeadline);
}

Result<cv1::Trace> ControlClient::trace(const cv1::TraceRequest& request) {
  return call<cv1::Trace>(&cv1::Control::Stub::TracePolicy, request, kCallDeadline);
}

Result<cv1::WorkloadList> ControlClient::workloads() {
  return call<cv1::WorkloadList>(&cv1::Control::Stub::ListWorkloads,
                                 cv1::ListWorkloadsRequest{}, kCallDeadline);
}

grpc::Status ControlClient::readFlows(const cv1::WatchFlowsRequest& request, bool old_call,
                                     const std::function<bool(const FlowRecord&)>& each,
                                     const std::function<void(uint64_t)>& skipped,
                                     bool& got_any) {
  grpc::ClientContext context;
  if (!request.follow()) {
    setDeadline(context, kCallDeadline);
  }
  got_any = false;
  if (old_call) {
    auto reader = stub_->WatchFlows(&context, request);
    FlowRecord record;
    while (reader->Read(&record)) {
      got_any = true;
      if (!each(record)) {
        context.TryCancel();
        break;
      }
    }
    return reader->Finish();
  }
  auto reader = stub_->FollowFlows(&context, request);
  cv1::FlowUpdate update;
  while (reader->Read(&update)) {
    got_any = true;
    if (update.skipped() > 0) {
      skipped(update.skipped());
    }
    if (update.has_record() && !each(update.record())) {
      context.TryCancel();
      break;
    }
  }
  return reader->Finish();
}

Status ControlClient::watchFlows(const cv1::WatchFlowsRequest& request,
                                 const std::function<bool(const FlowRecord&)>& each,
                                 const std::function<void(uint64_t)>& skipped) {
  bool got_any = false;
  auto status = readFlows(request, false, each, skipped, got_any);
  if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED && !got_any) {
    status = readFlows(request, true, each, skipped, got_any);  // an agent before FollowFlows
  }
  // A follow ends only when the caller stops it: any other end means the agent went away.
  // (An older agent ends it with OK when it stops, a newer one with UNAVAILABLE.)
  if (request.follow() && (status.ok() || status.error_code() == grpc::StatusCode::UNAVAILABLE)) {
    return Error(ECONNRESET, "the agent at " + socket_path_ +
                                 " ended the flow stream: microsegd stopped or restarted");
  }
  if (!status.ok() && status.error_code() != grpc::StatusCode::CANCELLED) {
    return callError(status);
  }
  return {};
}

}  // namespace mseg::ctl
