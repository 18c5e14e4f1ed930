#include "mseg/collector/collector.hpp"

#include <fmt/format.h>
#include <google/protobuf/arena.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/server_credentials.h>

#include <chrono>

#include "file_util.hpp"
#include "microseg/telemetry/v1/telemetry.grpc.pb.h"
#include "mseg/certificate_check.hpp"
#include "mseg/collector/logging.hpp"
#include "mseg/collector/ocsf_file_output.hpp"
#include "mseg/collector/syslog_output.hpp"
#include "worker_pool.hpp"

namespace mseg::collector {
namespace {

using microseg::telemetry::v1::ExportRequest;
using microseg::telemetry::v1::ExportResponse;
using microseg::telemetry::v1::FlowCollector;

constexpr std::chrono::seconds kShutdownGrace{5};
constexpr uint32_t kSyslogDrainMs = 2000;
// An agent that vanished without closing its connection is noticed within about a minute and
// a half (ping interval plus timeout), freeing its stream.
constexpr int kKeepaliveTimeMs = 60'000;
constexpr int kKeepaliveTimeoutMs = 20'000;

struct ServerPem {
  std::string cert;
  std::string key;
  std::string client_ca;
};

// Reads the server's TLS files and checks that they parse and that the key fits the
// certificate: gRPC would otherwise only fail at the first handshake, with a vaguer message.
Result<ServerPem> loadServerPem(const ServerTls& tls) {
  ServerPem pem;
  for (auto [path, text] : {std::pair{&tls.cert, &pem.cert}, std::pair{&tls.key, &pem.key},
                            std::pair{&tls.client_ca, &pem.client_ca}}) {
    auto read = readWholeFile(*path);
    if (!read) {
      return read.error();
    }
    *text = std::move(*read);
  }
  auto problems = mseg::checkTlsFiles({"tls.cert", tls.cert}, {"tls.key", tls.key},
                                      {"tls.client_ca", tls.client_ca}, std::nullopt);
  if (!problems.empty()) {
    std::string message;
    for (const auto& problem : problems) {
      message += (message.empty() ? "" : "; ") + problem;
    }
    return Error::invalid(message);
  }
  return pem;
}

}  // namespace

class Collector::Impl final : public FlowCollector::CallbackService {
public:
  Impl(SequenceStore store, std::vector<std::unique_ptr<Output>> outputs,
       const CollectorConfig& config)
      : outputs_(std::move(outputs)),
        handler_(std::move(store), rawPointers(outputs_), config.limits.max_batch_records),
        workers_(std::make_unique<WorkerPool>(config.limits.workers)) {}

  ~Impl() override {
    if (server_) {
      server_->Shutdown(std::chrono::system_clock::now() + kShutdownGrace);
    }
    workers_.reset();
    for (auto& output : outputs_) {
      output->stop(kSyslogDrainMs);
    }
  }

  // LIMITATION: the certificate files are read once; rotating them takes a restart, and no
  // revocation list is consulted.
  Status serve(const CollectorConfig& config, const ServerPem& pem) {
    grpc::SslServerCredentialsOptions options(
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    options.pem_root_certs = pem.client_ca;
    options.pem_key_cert_pairs.push_back({pem.key, pem.cert});

    grpc::ServerBuilder builder;
    builder.AddListeningPort(config.listen, grpc::SslServerCredentials(options), &port_);
    builder.RegisterService(this);
    builder.SetMaxReceiveMessageSize(static_cast<int>(config.limits.max_message_bytes));
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, kKeepaliveTimeMs);
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kKeepaliveTimeoutMs);
    server_ = builder.BuildAndStart();
    if (!server_ || port_ == 0) {
      server_.reset();
      return Error(EADDRNOTAVAIL, "listen on " + config.listen + ": gRPC could not bind it");
    }
    return {};
  }

  grpc::ServerBidiReactor<ExportRequest, ExportResponse>* Export(
      grpc::CallbackServerContext* context) override;

  int port() const { return port_; }
  BatchHandler& handler() { return handler_; }
  WorkerPool& workers() { return *workers_; }
  const std::vector<std::unique_ptr<Output>>& outputs() const { return outputs_; }

private:
  static std::vector<Output*> rawPointers(const std::vector<std::unique_ptr<Output>>& outputs) {
    std::vector<Output*> raw;
    for (const auto& output : outputs) {
      raw.push_back(output.get());
    }
    return raw;
  }

  std::vector<std::unique_ptr<Output>> outputs_;
  BatchHandler handler_;
  std::unique_ptr<WorkerPool> workers_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

namespace {

// Blocks grow from the default to 256 KiB, so that a full batch takes a dozen allocations.
google::protobuf::ArenaOptions arenaOptions() {
  google::protobuf::ArenaOptions options;
  options.max_block_size = 256 << 10;
  return options;
}

// One agent's stream. Exactly one operation is outstanding at any time (a read, the worker's
// handling of the request just read, or the write of its response), so members need no lock.
class ExportReactor final : public grpc::ServerBidiReactor<ExportRequest, ExportResponse> {
public:
  ExportReactor(Collector::Impl& owner, grpc::CallbackServerContext* context) : owner_(owner) {
    stream_.peer = identityFromAuthContext(*context->auth_context(), context->peer());
    IngestStats& stats = owner_.handler().mutableStats();
    ++stats.streams_active;
    // The handshake already demanded a verified certificate; one without any name cannot be
    // matched to a host.
    if (stream_.peer.empty()) {
      ++stats.streams_refused_identity;
      rpcLog()->warn("client certificate names no host, stream refused peer={}",
                     stream_.peer.address);
      finish(grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "the client certificate has neither a CN nor a DNS SAN"));
      return;
    }
    ++stats.streams_accepted;
    rpcLog()->info("agent stream opened peer={} {}", stream_.peer.address, stream_.peer.describe());
    StartRead(request_);
  }

  void OnReadDone(bool ok) override {
    // Not ok: the agent closed its side, or the call broke (cancelled, oversized message).
    if (!ok) {
      finish(grpc::Status::OK);
      return;
    }
    owner_.workers().post([this] { handleRequest(); });
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      finish(grpc::Status(grpc::StatusCode::CANCELLED, "stream broken"));
      return;
    }
    newRequest();
    StartRead(request_);
  }

  void OnDone() override {
    --owner_.handler().mutableStats().streams_active;
    rpcLog()->info("agent stream closed peer={} agent={} batches={} code={}", stream_.peer.address,
                   stream_.agent_id.empty() ? "-" : stream_.agent_id, batches_,
                   static_cast<int>(final_code_));
    delete this;
  }

private:
  void handleRequest() {
    ++batches_;
    BatchOutcome outcome = owner_.handler().handle(stream_, *request_);
    if (!outcome.status.ok()) {
      finish(outcome.status);
      return;
    }
    response_.set_acknowledged_sequence(outcome.acknowledged_sequence);
    StartWrite(&response_);
  }

  // Drops the handled request with everything in it and makes an empty one.
  void newRequest() {
    arena_.Reset();
    request_ = google::protobuf::Arena::CreateMessage<ExportRequest>(&arena_);
  }

  void finish(const grpc::Status& status) {
    final_code_ = status.error_code();
    Finish(status);
  }

  Collector::Impl& owner_;
  StreamState stream_;
  // A request is parsed into an arena that is reset once its response went out. A batch is a
  // thousand records with strings and label maps: in the arena they take a few large blocks that
  // are freed at once, where a plain message allocated every field, cleared it field by field and
  // kept the emptied records allocated while the stream waited for its next batch.
  google::protobuf::Arena arena_{arenaOptions()};
  ExportRequest* request_ = google::protobuf::Arena::CreateMessage<ExportRequest>(&arena_);
  ExportResponse response_;
  uint64_t batches_ = 0;
  grpc::StatusCode final_code_ = grpc::StatusCode::OK;
};

}  // namespace

grpc::ServerBidiReactor<ExportRequest, ExportResponse>* Collector::Impl::Export(
    grpc::CallbackServerContext* context) {
  return new ExportReactor(*this, context);
}

std::vector<std::string> checkTlsFiles(const CollectorConfig& config,
                                       std::optional<std::chrono::system_clock::time_point>
                                           valid_at) {
  auto problems = mseg::checkTlsFiles({"tls.cert", config.tls.cert}, {"tls.key", config.tls.key},
                                      {"tls.client_ca", config.tls.client_ca}, valid_at);
  for (const auto& output : config.outputs) {
    const auto* syslog = std::get_if<SyslogOutputConfig>(&output);
    if (syslog == nullptr || syslog->transport != SyslogTransport::kTls) {
      continue;
    }
    const std::string prefix = "output " + syslog->name + " ";
    auto found = mseg::checkTlsFiles({prefix + "cert", syslog->cert},
                                     {prefix + "key", syslog->key}, {prefix + "ca", syslog->ca},
                                     valid_at);
    problems.insert(problems.end(), found.begin(), found.end());
  }
  return problems;
}

Result<std::unique_ptr<Collector>> Collector::start(const CollectorConfig& config) {
  auto pem = loadServerPem(config.tls);
  if (!pem) {
    return pem.error();
  }
  (void)checkOwnCertificate(*collectorLog(), "tls.cert", config.tls.cert,
                            std::chrono::system_clock::now());
  auto store = SequenceStore::open(config.state_dir);
  if (!store) {
    return store.error();
  }

  std::vector<std::unique_ptr<Output>> outputs;
  for (const auto& output_config : config.outputs) {
    if (const auto* file = std::get_if<OcsfFileOutputConfig>(&output_config)) {
      auto opened = OcsfFileOutput::open(*file);
      if (!opened) {
        return opened.error().wrap("output " + file->name);
      }
      outputs.push_back(std::move(*opened));
    } else {
      const auto& syslog = std::get<SyslogOutputConfig>(output_config);
      auto started = SyslogOutput::start(syslog);
      if (!started) {
        return started.error();
      }
      outputs.push_back(std::move(*started));
    }
  }

  auto impl = std::make_unique<Impl>(std::move(*store), std::move(outputs), config);
  if (auto served = impl->serve(config, *pem); !served) {
    return served.error();
  }
  collectorLog()->info("listening address={} port={} outputs={} workers={}", config.listen,
                       impl->port(), config.outputs.size(), config.limits.workers);
  return std::unique_ptr<Collector>(new Collector(std::move(impl)));
}

Collector::Collector(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Collector::~Collector() = default;

int Collector::port() const { return impl_->port(); }

const IngestStats& Collector::stats() const { return impl_->handler().stats(); }

std::vector<NamedOutputStats> Collector::outputStats() const {
  std::vector<NamedOutputStats> all;
  for (const auto& output : impl_->outputs()) {
    all.push_back({output->name(), output->stats()});
  }
  return all;
}

std::string Collector::describeStats() const {
  const IngestStats& s = stats();
  std::string line =
      fmt::format("streams_active={} streams_accepted={} refused_identity={} refused_malformed={}",
                  s.streams_active.load(), s.streams_accepted.load(),
                  s.streams_refused_identity.load(), s.streams_refused_malformed.load());
  line += fmt::format(" failed_storage={} batches={} records_stored={} records_duplicate={}",
                      s.streams_failed_storage.load(), s.batches.load(), s.records_stored.load(),
                      s.records_duplicate.load());
  line += fmt::format(" sequence_gaps={} sequence_missing={} agent_dropped={}",
                      s.sequence_gaps.load(), s.sequence_missing.load(), s.agent_dropped.load());
  for (const auto& output : impl_->outputs()) {
    OutputStats counts = output->stats();
    line += fmt::format(" {0}.records={1} {0}.errors={2}", output->name(), counts.records,
                        counts.errors);
    if (output->durable()) {
      line += fmt::format(" {0}.rotations={1}", output->name(), counts.rotations);
    } else {
      line += fmt::format(" {0}.queued={1} {0}.queue_overflow={2} {0}.connected={3}",
                          output->name(), counts.queued, counts.queue_overflow, counts.connected);
      line += fmt::format(" {0}.reconnects={1} {0}.connect_failures={2}", output->name(),
                          counts.reconnects, counts.connect_failures);
    }
  }
  return line;
}

}  // namespace mseg::collector
