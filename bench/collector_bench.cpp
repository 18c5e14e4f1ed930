// collector_bench: the real microseg-collector binary receiving flow records from many agents at
// once, on 127.0.0.1 with mutual TLS, and how much collector CPU each record costs. It is not a
// test: figures depend on the machine, and nothing passes or fails except the exactly-once
// check (records stored must equal records acknowledged).
//
// usage: collector_bench [--seconds S] [--agents 1,8,32] [--fsync batch,none] [--workers N]
//                        [--batch N] [--commit ID] [--collector PATH] [--certs-script PATH]
//
// Once, in a fresh temporary directory: a CA, a collector certificate for 127.0.0.1 and one agent
// certificate per host bench-1 ... bench-<max agents>, all made by scripts/certs.sh. Then, for
// every fsync policy and agent count: a collector with an empty state directory and one
// ocsf_file output, started on port 0; one thread per agent, each with its own certificate,
// channel and Export stream, which opens with an empty request (as an agent asks for its mark),
// then, for S seconds, sends batches of increasing sequences and waits for each acknowledgement
// as microsegd does. The clock and the collector's CPU counters run only over that window, so
// TLS handshakes and start-up are not in the figures.
//
// The clients share the machine's cores with the collector, so records/s alone understates the
// collector; records per collector CPU-second (utime + stime from /proc) does not depend on how
// much CPU the clients took.
//
// The helpers of tests/support are not linked: they need GoogleTest, and benchmarks are built
// without the test suites too.
#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <latch>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "microseg/telemetry/v1/telemetry.grpc.pb.h"
#include "mseg/format/community_id.hpp"
#include "mseg/result.hpp"

namespace {

namespace fs = std::filesystem;
namespace telemetry = microseg::telemetry::v1;
using Clock = std::chrono::steady_clock;
using mseg::Error;
using mseg::Result;
using mseg::Status;

constexpr const char* kUsage =
    "usage: collector_bench [--seconds S] [--agents 1,8,32] [--fsync batch,none] [--workers N]\n"
    "                       [--batch N] [--commit ID] [--collector PATH] [--certs-script PATH]\n";
constexpr uint64_t kGoalPerCpuSecond = 100'000;
// Never reached in a run: files are not rotated, so counting lines of one file counts the run.
constexpr uint64_t kNoRotation = uint64_t{1} << 40;
// Every wait on a child or a stream is bounded; these are far above what a healthy run needs.
constexpr auto kCertsTimeout = std::chrono::seconds(120);
constexpr auto kStartTimeout = std::chrono::seconds(15);
constexpr auto kStopTimeout = std::chrono::seconds(20);
constexpr auto kStreamSlack = std::chrono::seconds(60);

std::atomic<bool> interrupted{false};

void onSignal(int) { interrupted = true; }

struct Options {
  double seconds = 10;
  std::vector<uint32_t> agents = {1, 8, 32};
  std::vector<std::string> fsync = {"batch", "none"};
  uint32_t workers = 0;  // 0: the collector's default
  uint32_t batch = 1000;
  std::string commit = "unknown";
  // Both paths are set by bench/CMakeLists.txt: the collector just built and the source tree's
  // script.
  std::string collector = MSEG_COLLECTOR_BINARY;
  std::string certs_script = MSEG_CERTS_SCRIPT;
};

std::vector<std::string> splitList(std::string_view text) {
  std::vector<std::string> items;
  while (!text.empty()) {
    auto comma = text.find(',');
    items.emplace_back(text.substr(0, comma));
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
  }
  return items;
}

std::optional<uint32_t> parseCount(std::string_view text) {
  uint32_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || value == 0) {
    return std::nullopt;
  }
  return value;
}

Result<Options> parseOptions(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    std::string_view flag = argv[i];
    if (i + 1 >= argc) {
      return Error::invalid(std::string(flag) + ": missing value");
    }
    std::string_view value = argv[++i];
    bool valid = true;
    if (flag == "--seconds") {
      options.seconds = std::atof(argv[i]);
      valid = options.seconds > 0 && options.seconds <= 3600;
    } else if (flag == "--agents") {
      options.agents.clear();
      for (const auto& item : splitList(value)) {
        auto count = parseCount(item);
        valid = valid && count && *count <= 1000;
        options.agents.push_back(count.value_or(0));
      }
      valid = valid && !options.agents.empty();
    } else if (flag == "--fsync") {
      options.fsync = splitList(value);
      for (const auto& policy : options.fsync) {
        valid = valid && (policy == "batch" || policy == "none");
      }
    } else if (flag == "--workers") {
      auto count = parseCount(value);
      valid = count && *count <= 256;
      options.workers = count.value_or(0);
    } else if (flag == "--batch") {
      auto count = parseCount(value);
      valid = count && *count <= 100'000;
      options.batch = count.value_or(0);
    } else if (flag == "--commit") {
      options.commit = value;
    } else if (flag == "--collector") {
      options.collector = value;
    } else if (flag == "--certs-script") {
      options.certs_script = value;
    } else {
      return Error::invalid("unknown option " + std::string(flag));
    }
    if (!valid) {
      return Error::invalid(std::string(flag) + " " + std::string(value) + ": not a valid value");
    }
  }
  return options;
}

// A directory under $TMPDIR that is removed with everything in it when this goes out of scope.
class TempDir {
public:
  static Result<TempDir> create() {
    fs::path base = std::getenv("TMPDIR") != nullptr ? std::getenv("TMPDIR") : "/tmp";
    std::string pattern = (base / "mseg-cbench.XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      return Error::fromErrno(errno, "create a directory like " + pattern);
    }
    return TempDir(pattern);
  }

  TempDir(TempDir&& other) noexcept : path_(std::exchange(other.path_, {})) {}
  TempDir& operator=(TempDir&&) = delete;
  ~TempDir() {
    if (!path_.empty()) {
      std::error_code ignored;
      fs::remove_all(path_, ignored);
    }
  }

  const fs::path& path() const { return path_; }

private:
  explicit TempDir(fs::path path) : path_(std::move(path)) {}

  fs::path path_;
};

// A child process with stdout and stderr in `log`. It gets SIGKILL when this process dies, and
// is killed and reaped when the object is dropped while it runs. Fork from the main thread only:
// the parent-death signal follows the thread that forked.
class Child {
public:
  static Result<Child> spawn(const std::vector<std::string>& argv, const fs::path& log) {
    int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd < 0) {
      return Error::fromErrno(errno, "open " + log.string());
    }
    std::vector<char*> args;
    for (const auto& arg : argv) {
      args.push_back(const_cast<char*>(arg.c_str()));
    }
    args.push_back(nullptr);

    pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) {
      int err = errno;
      ::close(log_fd);
      return Error::fromErrno(err, "fork");
    }
    if (pid == 0) {
      // Only async-signal-safe calls between fork and exec: the parent has gRPC threads.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) {
        ::_exit(127);
      }
      int null_fd = ::open("/dev/null", O_RDONLY);
      ::dup2(null_fd, STDIN_FILENO);
      ::dup2(log_fd, STDOUT_FILENO);
      ::dup2(log_fd, STDERR_FILENO);
      ::execvp(args[0], args.data());
      ::_exit(127);
    }
    ::close(log_fd);
    return Child(pid);
  }

  Child(Child&& other) noexcept : pid_(std::exchange(other.pid_, -1)) {}
  Child& operator=(Child&&) = delete;
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }

  pid_t pid() const { return pid_; }

  // The exit status, or nullopt while it still runs (without waiting).
  std::optional<int> poll() {
    int status = 0;
    if (pid_ <= 0 || ::waitpid(pid_, &status, WNOHANG) != pid_) {
      return std::nullopt;
    }
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  // Waits up to `timeout` for the exit status; on time-out the child is killed and ETIMEDOUT
  // returned.
  Result<int> wait(Clock::duration timeout) {
    auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      if (auto status = poll()) {
        return *status;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
    return Error(ETIMEDOUT, "child did not exit in time and was killed");
  }

private:
  explicit Child(pid_t pid) : pid_(pid) {}

  pid_t pid_;
};

std::string readText(const fs::path& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

// The last lines of a log, to quote in an error.
std::string tailOf(const fs::path& path) {
  std::string text = readText(path);
  constexpr size_t kTail = 1500;
  return text.size() > kTail ? "..." + text.substr(text.size() - kTail) : text;
}

Status runChecked(const std::vector<std::string>& argv, const fs::path& log) {
  auto child = Child::spawn(argv, log);
  if (!child) {
    return child.error();
  }
  auto status = child->wait(kCertsTimeout);
  if (!status) {
    return status.error().wrap(argv[0]);
  }
  if (*status != 0) {
    return Error(ECHILD, argv[0] + " exited with " + std::to_string(*status) + ": " + tailOf(log));
  }
  return {};
}

Status makeCertificates(const Options& options, const fs::path& pki, uint32_t agents) {
  auto certs = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = {"bash", options.certs_script, "--dir", pki.string()};
    argv.insert(argv.end(), args.begin(), args.end());
    return runChecked(argv, pki.parent_path() / "certs.log");
  };
  std::vector<std::string> hosts = {"agent"};
  for (uint32_t i = 1; i <= agents; ++i) {
    hosts.push_back("bench-" + std::to_string(i));
  }
  for (const auto& args : {std::vector<std::string>{"ca"},
                           std::vector<std::string>{"collector", "127.0.0.1"}, hosts}) {
    if (auto made = certs(args); !made) {
      return made.error().wrap("certificates");
    }
  }
  return {};
}

// /proc/<pid>/stat fields 14 and 15 (utime, stime) in seconds; the command name before them is
// in parentheses and may hold spaces, so fields are counted from the last ')'.
double cpuSeconds(pid_t pid) {
  std::string stat = readText("/proc/" + std::to_string(pid) + "/stat");
  std::istringstream fields(stat.substr(stat.rfind(')') + 2));
  std::string field;
  uint64_t utime = 0;
  uint64_t stime = 0;
  for (int index = 3; fields >> field && index <= 15; ++index) {
    if (index == 14) {
      utime = std::strtoull(field.c_str(), nullptr, 10);
    } else if (index == 15) {
      stime = std::strtoull(field.c_str(), nullptr, 10);
    }
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// VmHWM: the highest resident set size the process had, in KiB.
uint64_t peakRssKib(pid_t pid) {
  std::istringstream lines(readText("/proc/" + std::to_string(pid) + "/status"));
  std::string line;
  while (std::getline(lines, line)) {
    if (line.starts_with("VmHWM:")) {
      return std::strtoull(line.c_str() + 6, nullptr, 10);
    }
  }
  return 0;
}

// The 1-minute load average: other work on the machine takes cores from the collector, which
// lowers records/s but hardly records per collector CPU-second.
double loadAverage() { return std::atof(readText("/proc/loadavg").c_str()); }

double selfCpuSeconds() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& time) { return time.tv_sec + time.tv_usec / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

Result<uint64_t> countLines(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return Error::fromErrno(errno, "open " + path.string());
  }
  std::vector<char> buffer(1 << 20);
  uint64_t lines = 0;
  ssize_t got = 0;
  while ((got = ::read(fd, buffer.data(), buffer.size())) > 0) {
    lines += static_cast<uint64_t>(std::count(buffer.data(), buffer.data() + got, '\n'));
  }
  int err = errno;
  ::close(fd);
  if (got < 0) {
    return Error::fromErrno(err, "read " + path.string());
  }
  return lines;
}

// How fast this machine takes a new file into its page cache, in MB/s: every byte the collector
// writes pays it. Some VMs hand memory that was freed for a few seconds back to the host (virtio
// free page reporting), and the guest's next touch of such a page is a host fault: there a new
// file is written ten times slower than one that reuses recently freed pages.
Result<double> measureFileWrite(const fs::path& dir) {
  constexpr size_t kBlock = 1 << 20;
  constexpr size_t kBlocks = 256;
  fs::path path = dir / "write-rate.tmp";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    return Error::fromErrno(errno, "create " + path.string());
  }
  std::string block(kBlock, 'x');
  auto started = Clock::now();
  Status written;
  for (size_t i = 0; i < kBlocks && written; ++i) {
    if (::write(fd, block.data(), block.size()) != static_cast<ssize_t>(block.size())) {
      written = Error::fromErrno(errno, "write " + path.string());
    }
  }
  double seconds = std::chrono::duration<double>(Clock::now() - started).count();
  ::close(fd);
  ::unlink(path.c_str());
  if (!written) {
    return written.error();
  }
  return kBlock * kBlocks / seconds / 1e6;
}

// An address in network byte order whose last 32 bits are `low`: IPv4, or fd00::/8 for IPv6.
std::string packAddress(bool ipv6, uint32_t low) {
  std::string bytes(ipv6 ? 16 : 4, '\0');
  if (ipv6) {
    bytes[0] = static_cast<char>(0xfd);
  }
  for (size_t i = 0; i < 4; ++i) {
    bytes[bytes.size() - 1 - i] = static_cast<char>((low >> (8 * i)) & 0xff);
  }
  return bytes;
}

// A batch of what microsegd sends for `host` under connection churn: flows in START and END
// pairs, 30% IPv6, a third of them ingress, labels on workload and peer, the Community ID set as
// the agent's flow recorder sets it. Sequences, record ids and times are filled in per batch.
telemetry::ExportRequest makeBatch(const std::string& host, uint32_t agent, uint32_t size) {
  static constexpr const char* kTiers[] = {"web", "api", "db", "cache", "worker"};
  static constexpr const char* kCommands[] = {"gunicorn", "nginx", "postgres", "redis-server"};
  telemetry::ExportRequest batch;
  for (uint32_t i = 0; i < size; ++i) {
    uint32_t flow = i / 2;
    bool start = i % 2 == 0;
    bool ipv6 = flow % 10 >= 7;
    bool ingress = flow % 3 == 0;
    const char* tier = kTiers[(agent + flow) % 5];
    telemetry::FlowRecord& record = *batch.add_records();
    record.set_agent_id(host);
    record.set_host(host);
    record.set_direction(ingress ? telemetry::DIRECTION_INGRESS : telemetry::DIRECTION_EGRESS);
    record.set_ip_version(ipv6 ? 6 : 4);
    record.set_protocol(flow % 8 == 0 ? 17 : 6);
    // Local addresses in 198.18.0.0/16, peers in 198.19.0.0/16 (or fd00::/8).
    record.set_local_address(packAddress(ipv6, (ipv6 ? 0x10000 : 0xc6120000) + agent));
    record.set_peer_address(packAddress(ipv6, (ipv6 ? 0x80000 : 0xc6130000) + flow));
    record.set_local_port(ingress ? 443 : 32768 + flow % 28000);
    record.set_peer_port(ingress ? 40000 + flow % 20000 : 5432);

    auto* workload = record.mutable_workload();
    workload->set_name(tier);
    (*workload->mutable_labels())["app"] = "shop";
    (*workload->mutable_labels())["tier"] = tier;
    (*workload->mutable_labels())["env"] = "prod";
    workload->set_cgroup(std::string("system.slice/shop-") + tier + ".service");
    workload->set_cgroup_id(4242 + flow % 5);
    workload->set_pid(3170 + flow % 64);
    workload->set_uid(1000);
    workload->set_command(kCommands[flow % 4]);
    record.mutable_peer()->set_name(ingress ? "office" : "db-hosts");
    (*record.mutable_peer()->mutable_labels())["zone"] = ingress ? "office" : "dc1";
    (*record.mutable_peer()->mutable_labels())["tier"] = "db";

    record.set_verdict(flow % 20 == 0 ? telemetry::VERDICT_AUDIT : telemetry::VERDICT_ALLOW);
    record.set_rule("shop/web-to-db");
    record.set_policy_version(12);
    record.set_policy_hash("sha256:5d41402abc4b2a76");
    record.set_event(start ? telemetry::FLOW_EVENT_START : telemetry::FLOW_EVENT_END);
    if (!start) {
      record.set_duration_nano(2'500'000'000);
      record.set_bytes_out(1200 + flow * 17);
      record.set_bytes_in(48000 + flow * 131);
      record.set_packets_out(10 + flow % 50);
      record.set_packets_in(40 + flow % 90);
    }
    if (auto id = mseg::format::communityId(record)) {
      record.set_community_id(*id);
    }
  }
  return batch;
}

uint64_t unixNanos() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

struct AgentOutcome {
  uint64_t sent = 0;  // records of acknowledged batches
  uint64_t last_sequence = 0;
  uint64_t last_ack = 0;
  std::string failure;  // empty when every batch was acknowledged
};

struct StreamPem {
  std::string ca;
  std::string cert;
  std::string key;
};

// Signals from the clients to the main thread and back around the timed window.
struct Window {
  std::latch connected;
  std::latch go{1};
  std::latch finished;
  Clock::time_point until;
};

// One agent: connect and ask for the mark, wait for the window, stream batches until it ends.
void runAgent(uint32_t index, int port, const StreamPem& pem, uint32_t batch_size, double seconds,
              Window& window, AgentOutcome& outcome) {
  std::string host = "bench-" + std::to_string(index);
  telemetry::ExportRequest batch = makeBatch(host, index, batch_size);

  grpc::SslCredentialsOptions tls;
  tls.pem_root_certs = pem.ca;
  tls.pem_cert_chain = pem.cert;
  tls.pem_private_key = pem.key;
  grpc::ChannelArguments arguments;
  // A connection per agent, as separate hosts have: no sharing through the global pool.
  arguments.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  arguments.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  arguments.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  auto channel = grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port),
                                           grpc::SslCredentials(tls), arguments);
  auto stub = telemetry::FlowCollector::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(
      std::chrono::system_clock::now() +
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::duration<double>(seconds)) +
      kStreamSlack);
  auto stream = stub->Export(&context);

  telemetry::ExportResponse response;
  bool healthy = stream->Write(telemetry::ExportRequest()) && stream->Read(&response);
  if (!healthy) {
    outcome.failure = "no answer to the opening request";
  }
  window.connected.count_down();
  window.go.wait();

  while (healthy && !interrupted && Clock::now() < window.until) {
    uint64_t now = unixNanos();
    for (auto& record : *batch.mutable_records()) {
      uint64_t sequence = ++outcome.last_sequence;
      record.set_sequence(sequence);
      record.set_record_id(host + "-" + std::to_string(sequence));
      record.set_time_unix_nano(now);
      record.set_start_unix_nano(
          record.event() == telemetry::FLOW_EVENT_START ? now : now - record.duration_nano());
    }
    if (!stream->Write(batch) || !stream->Read(&response)) {
      outcome.failure = "stream broke";
      break;
    }
    outcome.last_ack = response.acknowledged_sequence();
    if (outcome.last_ack != outcome.last_sequence) {
      outcome.failure = "acknowledged " + std::to_string(outcome.last_ack) + " after sending " +
                        std::to_string(outcome.last_sequence);
      break;
    }
    outcome.sent += batch.records_size();
  }
  window.finished.count_down();

  stream->WritesDone();
  grpc::Status status = stream->Finish();
  if (!status.ok()) {
    std::string why =
        "status " + std::to_string(status.error_code()) + ": " + status.error_message();
    outcome.failure = outcome.failure.empty() ? why : outcome.failure + " (" + why + ")";
  }
}

struct RunFigures {
  std::string fsync;
  uint32_t agents = 0;
  uint64_t sent = 0;
  uint64_t stored = 0;
  bool acks_match = true;
  double seconds = 0;
  double collector_cpu = 0;
  double client_cpu = 0;
  uint64_t peak_rss_kib = 0;
  uint64_t output_bytes = 0;
  double load_average = 0;
  int exit_status = 0;
  std::string failure;

  bool exactlyOnce() const { return acks_match && stored == sent && failure.empty(); }
  double perSecond() const { return seconds > 0 ? sent / seconds : 0; }
  double perCpuSecond() const { return collector_cpu > 0 ? stored / collector_cpu : 0; }
  double bytesPerRecord() const {
    return stored > 0 ? static_cast<double>(output_bytes) / stored : 0;
  }
};

Status writeConfig(const fs::path& run_dir, const fs::path& pki, const std::string& fsync,
                   uint32_t workers) {
  std::ofstream config(run_dir / "collector.yaml");
  config << "listen: 127.0.0.1:0\n"
         << "tls:\n"
         << "  cert: " << (pki / "collector.crt").string() << "\n"
         << "  key: " << (pki / "collector.key").string() << "\n"
         << "  client_ca: " << (pki / "ca.crt").string() << "\n"
         << "state_dir: " << (run_dir / "state").string() << "\n"
         << "log_level: info\n"
         << "stats_interval: 0\n";
  if (workers != 0) {
    config << "limits:\n  workers: " << workers << "\n";
  }
  config << "outputs:\n"
         << "  - type: ocsf_file\n"
         << "    name: bench\n"
         << "    path: " << (run_dir / "out/flows.ocsf.jsonl").string() << "\n"
         << "    max_bytes: " << kNoRotation << "\n"
         << "    fsync: " << fsync << "\n";
  config.close();
  if (!config) {
    return Error::fromErrno(errno, "write " + (run_dir / "collector.yaml").string());
  }
  return {};
}

// The port from the collector's "listening ... port=N" line, once it is there.
Result<int> waitForPort(Child& collector, const fs::path& log) {
  auto deadline = Clock::now() + kStartTimeout;
  while (Clock::now() < deadline) {
    std::string text = readText(log);
    auto listening = text.find("listening ");
    auto port = listening == std::string::npos ? listening : text.find(" port=", listening);
    if (port != std::string::npos) {
      return std::atoi(text.c_str() + port + 6);
    }
    if (auto status = collector.poll()) {
      return Error(ECHILD, "collector exited with " + std::to_string(*status) + ": " + tailOf(log));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return Error(ETIMEDOUT, "collector did not listen in time: " + tailOf(log));
}

Result<RunFigures> runOnce(const Options& options, const fs::path& work, const fs::path& pki,
                           const std::string& fsync, uint32_t agents) {
  fs::path run_dir = work / ("run-" + fsync + "-" + std::to_string(agents));
  std::error_code error;
  fs::create_directories(run_dir, error);
  if (error) {
    return Error::fromErrno(error.value(), "create " + run_dir.string());
  }
  if (auto written = writeConfig(run_dir, pki, fsync, options.workers); !written) {
    return written.error();
  }

  fs::path log = run_dir / "collector.log";
  auto collector =
      Child::spawn({options.collector, "--config", (run_dir / "collector.yaml").string()}, log);
  if (!collector) {
    return collector.error().wrap("start " + options.collector);
  }
  auto port = waitForPort(*collector, log);
  if (!port) {
    return port.error();
  }

  std::vector<StreamPem> pems(agents);
  for (uint32_t i = 0; i < agents; ++i) {
    std::string name = "agent-bench-" + std::to_string(i + 1);
    pems[i] = {readText(pki / "ca.crt"), readText(pki / (name + ".crt")),
               readText(pki / (name + ".key"))};
  }
  Window window{std::latch(agents), std::latch(1), std::latch(agents), {}};
  std::vector<AgentOutcome> outcomes(agents);
  std::vector<std::thread> clients;
  for (uint32_t i = 0; i < agents; ++i) {
    clients.emplace_back(runAgent, i + 1, *port, std::cref(pems[i]), options.batch, options.seconds,
                         std::ref(window), std::ref(outcomes[i]));
  }

  window.connected.wait();
  RunFigures figures;
  figures.fsync = fsync;
  figures.agents = agents;
  double collector_cpu_before = cpuSeconds(collector->pid());
  double client_cpu_before = selfCpuSeconds();
  auto started = Clock::now();
  window.until = started + std::chrono::duration_cast<Clock::duration>(
                               std::chrono::duration<double>(options.seconds));
  window.go.count_down();
  window.finished.wait();
  figures.seconds = std::chrono::duration<double>(Clock::now() - started).count();
  figures.collector_cpu = cpuSeconds(collector->pid()) - collector_cpu_before;
  figures.client_cpu = selfCpuSeconds() - client_cpu_before;
  figures.peak_rss_kib = peakRssKib(collector->pid());
  figures.load_average = loadAverage();
  for (auto& client : clients) {
    client.join();
  }

  ::kill(collector->pid(), SIGTERM);
  auto exited = collector->wait(kStopTimeout);
  figures.exit_status = exited ? *exited : -1;
  for (uint32_t i = 0; i < agents; ++i) {
    figures.sent += outcomes[i].sent;
    figures.acks_match = figures.acks_match && outcomes[i].last_ack == outcomes[i].last_sequence;
    if (!outcomes[i].failure.empty() && figures.failure.empty()) {
      figures.failure = "bench-" + std::to_string(i + 1) + ": " + outcomes[i].failure;
    }
  }
  if (figures.exit_status != 0 && figures.failure.empty()) {
    figures.failure =
        "collector exited with " + std::to_string(figures.exit_status) + ": " + tailOf(log);
  }
  fs::path output = run_dir / "out/flows.ocsf.jsonl";
  auto lines = countLines(output);
  if (!lines) {
    return lines.error();
  }
  figures.stored = *lines;
  figures.output_bytes = fs::file_size(output, error);

  // A run writes hundreds of megabytes; the next one does not need them.
  fs::remove_all(run_dir / "out", error);
  return figures;
}

struct Machine {
  uint32_t cores = 0;
  double file_write_mb_s = 0;
};

void printTable(const Options& options, const std::vector<RunFigures>& runs,
                const Machine& machine) {
  fmt::print("\nmicroseg-collector under many agents, mutual TLS on 127.0.0.1, commit {}\n",
             options.commit);
  fmt::print("{} cores, shared by the bench's agent threads and the collector\n", machine.cores);
  fmt::print("a new 256 MiB file is written into the page cache here at {:.0f} MB/s\n",
             machine.file_write_mb_s);
  fmt::print("batches of {} records, {} s per run, collector workers: {}, one ocsf_file output\n",
             options.batch, options.seconds,
             options.workers == 0 ? "default" : std::to_string(options.workers));
  fmt::print("goal: {} records per collector CPU-second\n\n", kGoalPerCpuSecond);

  fmt::print("{:<6} {:>6} {:>10} {:>10} {:>5} {:>7} {:>10} {:>10} {:>10} {:>10} {:>8} {:>6}",
             "fsync", "agents", "sent", "stored", "exact", "seconds", "records/s", "coll CPU s",
             "rec/CPU-s", "client CPU", "RSS MiB", "B/rec");
  fmt::print(" {:>6}\n", "load1");
  for (const RunFigures& run : runs) {
    fmt::print("{:<6} {:>6} {:>10} {:>10} {:>5} {:>7.2f} {:>10.0f} {:>10.2f} {:>10.0f} {:>10.2f}",
               run.fsync, run.agents, run.sent, run.stored, run.exactlyOnce() ? "yes" : "NO",
               run.seconds, run.perSecond(), run.collector_cpu, run.perCpuSecond(), run.client_cpu);
    fmt::print(" {:>8.1f} {:>6.0f} {:>6.2f}\n", run.peak_rss_kib / 1024.0, run.bytesPerRecord(),
               run.load_average);
  }
  fmt::print("\n");
  fmt::print("records/s   acknowledged records per second of wall time\n");
  fmt::print("rec/CPU-s   stored records per second of collector CPU (user + system)\n");
  fmt::print("client CPU  CPU seconds of the bench's own agent threads in the same window\n");
  fmt::print("B/rec       bytes of the output file per stored record\n");
  fmt::print("load1       the machine's 1-minute load average at the end of the run\n");
  for (const RunFigures& run : runs) {
    if (!run.failure.empty()) {
      fmt::print("fsync={} agents={} failed: {}\n", run.fsync, run.agents, run.failure);
    }
  }

  std::string json = fmt::format("{{\"bench\":\"collector\",\"commit\":\"{}\"", options.commit);
  json += fmt::format(",\"cores\":{},\"batch_records\":{}", machine.cores, options.batch);
  json += fmt::format(",\"file_write_mb_per_second\":{:.0f}", machine.file_write_mb_s);
  json += fmt::format(",\"goal_records_per_cpu_second\":{},\"runs\":[", kGoalPerCpuSecond);
  for (size_t i = 0; i < runs.size(); ++i) {
    const RunFigures& run = runs[i];
    json +=
        fmt::format("{}{{\"fsync\":\"{}\",\"agents\":{}", i == 0 ? "" : ",", run.fsync, run.agents);
    json += fmt::format(",\"records_sent\":{},\"records_stored\":{}", run.sent, run.stored);
    json += fmt::format(",\"exactly_once\":{},\"seconds\":{:.3f}", run.exactlyOnce(), run.seconds);
    json += fmt::format(",\"records_per_second\":{:.0f}", run.perSecond());
    json += fmt::format(",\"collector_cpu_seconds\":{:.3f}", run.collector_cpu);
    json += fmt::format(",\"records_per_collector_cpu_second\":{:.0f}", run.perCpuSecond());
    json += fmt::format(",\"client_cpu_seconds\":{:.3f}", run.client_cpu);
    json += fmt::format(",\"collector_peak_rss_kib\":{}", run.peak_rss_kib);
    json += fmt::format(",\"output_bytes_per_record\":{:.0f}", run.bytesPerRecord());
    json += fmt::format(",\"load_average_1m\":{:.2f}}}", run.load_average);
  }
  json += "]}";
  fmt::print("\n{}\n", json);
}

}  // namespace

int main(int argc, char** argv) {
  auto options = parseOptions(argc, argv);
  if (!options) {
    std::fprintf(stderr, "collector_bench: %s\n%s", options.error().message().c_str(), kUsage);
    return 2;
  }
  struct sigaction stop {};
  stop.sa_handler = onSignal;
  ::sigaction(SIGINT, &stop, nullptr);
  ::sigaction(SIGTERM, &stop, nullptr);

  auto work = TempDir::create();
  if (!work) {
    std::fprintf(stderr, "collector_bench: %s\n", work.error().message().c_str());
    return 1;
  }
  fs::path pki = work->path() / "pki";
  uint32_t max_agents = *std::max_element(options->agents.begin(), options->agents.end());
  std::fprintf(stderr, "making certificates for %u agents in %s\n", max_agents,
               work->path().c_str());
  if (auto made = makeCertificates(*options, pki, max_agents); !made) {
    std::fprintf(stderr, "collector_bench: %s\n", made.error().message().c_str());
    return 1;
  }

  Machine machine{std::thread::hardware_concurrency(), 0};
  auto write_rate = measureFileWrite(work->path());
  if (!write_rate) {
    std::fprintf(stderr, "collector_bench: %s\n", write_rate.error().message().c_str());
    return 1;
  }
  machine.file_write_mb_s = *write_rate;

  std::vector<RunFigures> runs;
  for (const auto& fsync : options->fsync) {
    for (uint32_t agents : options->agents) {
      if (interrupted) {
        break;
      }
      std::fprintf(stderr, "run fsync=%s agents=%u\n", fsync.c_str(), agents);
      auto run = runOnce(*options, work->path(), pki, fsync, agents);
      if (!run) {
        std::fprintf(stderr, "collector_bench: fsync=%s agents=%u: %s\n", fsync.c_str(), agents,
                     run.error().message().c_str());
        return 1;
      }
      runs.push_back(std::move(*run));
    }
  }

  printTable(*options, runs, machine);
  bool all_exact = std::all_of(runs.begin(), runs.end(),
                               [](const RunFigures& run) { return run.exactlyOnce(); });
  return all_exact && !interrupted ? 0 : 1;
}
