// microsegctl's connection to the running agent's control socket. Every failure becomes an
// Error whose message names the cause and the fix, e.g. "no agent at PATH (is microsegd
// running? --socket to choose another)".
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "microseg/control/v1/control.grpc.pb.h"
#include "mseg/result.hpp"

namespace mseg::ctl {

namespace cv1 = microseg::control::v1;
using FlowRecord = microseg::telemetry::v1::FlowRecord;

// Why this process cannot talk to an agent at `socket_path`, found with stat() and a plain
// connect() before any gRPC: nothing there or nothing answering (ENOENT, ECONNREFUSED: "no
// agent at ..."), not allowed (EACCES: "permission denied on ...: run as root or as a member
// of group G", G read from the socket's group; or, when a directory on the way lets this user
// not even look, that directory with its mode, owner and group), or not a socket.
Status checkControlSocket(const std::string& socket_path);

class ControlClient {
public:
  // Checks the socket (see checkControlSocket) and opens a channel to it.
  static Result<ControlClient> connect(const std::string& socket_path);

  Result<cv1::AgentStatus> status();
  // The diff of the policy in `request` (one file's text, or a directory's files) against the
  // running one.
  Result<cv1::PolicyDiff> diffPolicy(const cv1::DiffPolicyRequest& request);
  Result<cv1::Trace> trace(const cv1::TraceRequest& request);
  Result<cv1::WorkloadList> workloads();
  // Hands every record to `each` until the stream ends, `each` returns false, or it fails;
  // `skipped` hears how many records a slow reader missed (agents that can say so). A follow
  // the agent ends (it stopped) fails with ECONNRESET, saying so.
  Status watchFlows(const cv1::WatchFlowsRequest& request,
                    const std::function<bool(const FlowRecord&)>& each,
                    const std::function<void(uint64_t)>& skipped);

private:
  explicit ControlClient(std::string socket_path) : socket_path_(std::move(socket_path)) {}
  Error callError(const grpc::Status& status) const;
  // One unary call of the stub's `method` with a deadline.
  template <typename Reply, typename Request, typename Method>
  Result<Reply> call(Method method, const Request& request, std::chrono::seconds deadline);
  // One stream of FollowFlows, or of WatchFlows with `old_call`; `got_any` tells whether
  // anything came.
  grpc::Status readFlows(const cv1::WatchFlowsRequest& request, bool old_call,
                         const std::function<bool(const FlowRecord&)>& each,
                         const std::function<void(uint64_t)>& skipped, bool& got_any);

  std::string socket_path_;
  std::unique_ptr<cv1::Control::Stub> stub_;
};

}  // namespace mseg::ctl
