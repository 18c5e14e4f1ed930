#include "collector_client.hpp"

#include <fstream>
#include <sstream>

#include <grpcpp/grpcpp.h>

#include "logging.hpp"
#include "microseg/telemetry/v1/telemetry.grpc.pb.h"

namespace mseg::agent {
namespace {

namespace tv1 = microseg::telemetry::v1;

constexpr size_t kBatchRecords = 1000;
constexpr auto kIdleWait = std::chrono::milliseconds(500);
constexpr auto kMaxBackoff = std::chrono::seconds(5);

Result<std::string> readPem(const std::string& path, const char* what) {
  std::ifstream file(path);
  if (!file) {
    return Error::fromErrno(errno, std::string("read ") + what + " " + path);
  }
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

}  // namespace

Result<std::unique_ptr<CollectorClient>> CollectorClient::create(
    const CollectorSettings& settings, Spool& spool) {
  std::unique_ptr<CollectorClient> client(new CollectorClient(settings, spool));
  auto ca = readPem(settings.ca_file, "collector CA");
  auto cert = readPem(settings.cert_file, "agent certificate");
  auto key = readPem(settings.key_file, "agent key");
  if (!ca) {
    return ca.error();
  }
  if (!cert) {
    return cert.error();
  }
  if (!key) {
    return key.error();
  }
  client->ca_pem_ = std::move(*ca);
  client->cert_pem_ = std::move(*cert);
  client->key_pem_ = std::move(*key);
  return client;
}

CollectorClient::~CollectorClient() { stop(); }

void CollectorClient::start() {
  thread_ = std::thread([this] { run(); });
}

void CollectorClient::stop() {
  if (!thread_.joinable()) {
    return;
  }
  stopping_ = true;
  {
    std::lock_guard lock(mutex_);
    if (active_context_ != nullptr) {
      active_context_->TryCancel();
    }
    wake_.notify_all();
  }
  thread_.join();
}

void CollectorClient::notify() {
  std::lock_guard lock(mutex_);
  pending_ = true;
  wake_.notify_all();
}

void CollectorClient::waitForRecords(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  wake_.wait_for(lock, timeout, [this] { return pending_ || stopping_.load(); });
  pending_ = false;
}

void CollectorClient::run() {
  auto log = logger("rpc");
  auto backoff = std::chrono::milliseconds(100);
  while (!stopping_) {
    auto streamed = streamOnce();
    if (stopping_) {
      break;
    }
    if (connected_.exchange(false)) {
      log->warn("collector stream ended, records are spooled until it returns address={} err={}",
                settings_.address, streamed ? "closed" : streamed.error().message());
    } else if (!streamed) {
      log->debug("collector unreachable address={} err={}", settings_.address,
                 streamed.error().message());
    }
    waitForRecords(backoff);
    backoff = std::min<std::chrono::milliseconds>(backoff * 2, kMaxBackoff);
    if (connected_) {
      backoff = std::chrono::milliseconds(100);
    }
  }
}

Status CollectorClient::streamOnce() {
  grpc::SslCredentialsOptions tls;
  tls.pem_root_certs = ca_pem_;
  tls.pem_cert_chain = cert_pem_;
  tls.pem_private_key = key_pem_;
  grpc::ChannelArguments arguments;
  if (!settings_.server_name.empty()) {
    arguments.SetSslTargetNameOverride(settings_.server_name);
  }
  // Detects a collector that vanished without closing the connection.
  arguments.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  arguments.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  auto channel =
      grpc::CreateCustomChannel(settings_.address, grpc::SslCredentials(tls), arguments);
  auto stub = tv1::FlowCollector::NewStub(channel);

  grpc::ClientContext context;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) {
      return {};
    }
    active_context_ = &context;
  }
  auto stream = stub->Export(&context);
  uint64_t sent_upto = spool_.acknowledged();
  Status outcome;
  while (!stopping_) {
    auto records = spool_.read(sent_upto, kBatchRecords);
    if (!records) {
      outcome = records.error();
      break;
    }
    if (records->empty()) {
      waitForRecords(kIdleWait);
      continue;
    }
    tv1::ExportRequest request;
    for (auto& record : *records) {
      *request.add_records() = std::move(record);
    }
    request.set_dropped_total(spool_.droppedTotal());
    tv1::ExportResponse response;
    if (!stream->Write(request) || !stream->Read(&response)) {
      break;
    }
    if (!connected_.exchange(true)) {
      logger("rpc")->info("collector connected address={} resuming_after={}",
                          settings_.address, sent_upto);
    }
    batches_sent_ += 1;
    sent_upto = std::max(sent_upto, response.acknowledged_sequence());
    if (auto acknowledged = spool_.acknowledge(response.acknowledged_sequence()); !acknowledged) {
      outcome = acknowledged.error();
      break;
    }
  }
  stream->WritesDone();
  grpc::Status status = stream->Finish();
  {
    std::lock_guard lock(mutex_);
    active_context_ = nullptr;
  }
  if (!outcome.ok()) {
    return outcome;
  }
  if (!status.ok() && !stopping_) {
    return Error(EIO, "collector " + settings_.address + ": " + status.error_message());
  }
  return {};
}

}  // namespace mseg::agent
