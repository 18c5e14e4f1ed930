#include "agent_client.hpp"

#include <chrono>

namespace mseg::collector::testing {

using microseg::telemetry::v1::ExportRequest;
using microseg::telemetry::v1::ExportResponse;
using microseg::telemetry::v1::FlowCollector;

AgentStream::AgentStream(int port, const ClientTls& tls) {
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = tls.ca_pem;
  options.pem_cert_chain = tls.cert_pem;
  options.pem_private_key = tls.key_pem;

  grpc::ChannelArguments arguments;
  // A connection of this stream's own, so that tests with different certificates never share
  // one through gRPC's global subchannel pool.
  arguments.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  channel_ = grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port),
                                       grpc::SslCredentials(options), arguments);
  stub_ = FlowCollector::NewStub(channel_);
  context_.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  stream_ = stub_->Export(&context_);
}

AgentStream::~AgentStream() {
  if (!status_) {
    context_.TryCancel();
    finish();
  }
}

std::optional<uint64_t> AgentStream::exchange(const ExportRequest& request) {
  ExportResponse response;
  if (status_ || !stream_->Write(request) || !stream_->Read(&response)) {
    return std::nullopt;
  }
  return response.acknowledged_sequence();
}

grpc::Status AgentStream::finish() {
  if (!status_) {
    stream_->WritesDone();
    status_ = stream_->Finish();
  }
  return *status_;
}

}  // namespace mseg::collector::testing
