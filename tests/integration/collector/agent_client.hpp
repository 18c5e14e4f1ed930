// A stand-in for microsegd's exporter: one Export stream over mutual TLS, with the generated
// stub, driven one request and one acknowledgement at a time.
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "microseg/telemetry/v1/telemetry.grpc.pb.h"

namespace mseg::collector::testing {

struct ClientTls {
  std::string ca_pem;    // verifies the collector
  std::string cert_pem;  // empty: present no client certificate
  std::string key_pem;
};

class AgentStream {
public:
  // Opens a channel of its own to 127.0.0.1:`port` and starts the stream; the TLS handshake
  // happens with the first request. Every call gives up after 20 seconds.
  AgentStream(int port, const ClientTls& tls);
  ~AgentStream();

  // Sends `request` and waits for its acknowledgement: the acknowledged sequence, or nullopt
  // when the stream ended instead (finish() then says why).
  std::optional<uint64_t> exchange(const microseg::telemetry::v1::ExportRequest& request);

  // Closes the sending side and returns the stream's final status.
  grpc::Status finish();

private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<microseg::telemetry::v1::FlowCollector::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<microseg::telemetry::v1::ExportRequest,
                                           microseg::telemetry::v1::ExportResponse>>
      stream_;
  std::optional<grpc::Status> status_;
};

}  // namespace mseg::collector::testing
