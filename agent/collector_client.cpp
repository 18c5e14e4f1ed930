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
// A collector that stays unreachable is warned about at the first failure, then at most this
// often, so the log says why records pile up without a line per retry.
constexpr auto kFailureReportInterval = std::chrono::minutes(1);

Result<std::string> readPem(const std::string& path, const char* what) {
  std::ifstream file(path);
  if (!file) {
    return Error::fromErrno(errno, std::string("read ") + what + " " + path);
  }
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

// Records observed on this machine belong to this host under its current name. Stamping the
// name at send time rather than trusting the one spooled means a run with a wrong --host leaves
// nothing behind that the collector refuses forever once the name is corrected.
void stampHost(tv1::FlowRecord& record, const std::string& host) {
  record.set_host(host);
  record.set_agent_id(host);
  record.set_record_id(host + "-" + std::to_string(record.sequence()));
}

// The collector's refusal of our identity (certificate versus --host) is a configuration error
// the operator must fix; everything else may pass by itself.
Error streamError(const std::string& address, const grpc::Status& status) {
  const bool refused = status.error_code() == grpc::StatusCode::PERMISSION_DENIED ||
                       status.error_code() == grpc::StatusCode::UNAUTHENTICATED;
  return Error(refused ? EACCES : EIO, "collector " + address + ": " + status.error_message());
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
      reportFailure(streamed.error());
    }
    waitForRecords(backoff);
    backoff = std::min<std::chrono::milliseconds>(backoff * 2, kMaxBackoff);
    if (connected_) {
      backoff = std::chrono::milliseconds(100);
    }
  }
}

void CollectorClient::reportFailure(const Error& error) {
  failed_attempts_ += 1;
  failures_unreported_ += 1;
  const auto now = std::chrono::steady_clock::now();
  const bool reported_lately = last_failure_report_ != std::chrono::steady_clock::time_point{} &&
                               now - last_failure_report_ < kFailureReportInterval;
  if (reported_lately) {
    return;
  }
  auto log = logger("rpc");
  if (error.code() == EACCES) {
    log->error(
        "collector refuses this agent's records, they stay spooled; set --host to a name in "
        "the agent certificate host={} address={} failures={} err={}",
        settings_.host, settings_.address, failures_unreported_, error.message());
  } else {
    log->warn(
        "cannot reach or authenticate the collector, records stay spooled; check the address, "
        "that it runs, and that both certificates are valid and signed by the CAs configured "
        "address={} failures={} err={}",
        settings_.address, failures_unreported_, error.message());
  }
  failures_unreported_ = 0;
  last_failure_report_ = now;
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
    // LIMITATION: the stream's handshake fails only at the first write, so nothing waiting means
    // nothing learnt about an unreachable or refusing collector (docs/limitations.md).
    if (records->empty()) {
      waitForRecords(kIdleWait);
      continue;
    }
    tv1::ExportRequest request;
    for (auto& record : *records) {
      stampHost(record, settings_.host);
      *request.add_records() = std::move(record);
    }
    request.set_dropped_total(spool_.droppedTotal());
    tv1::ExportResponse response;
    if (!stream->Write(request) || !stream->Read(&response)) {
      break;
    }
    failed_attempts_ = 0;
    failures_unreported_ = 0;
    last_failure_report_ = {};
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
    return streamError(settings_.address, status);
  }
  return {};
}

}  // namespace mseg::agent
