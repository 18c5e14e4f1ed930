// connect_load: opens and closes TCP connections to one server as fast as it can for a while,
// then prints the connection rate and connect() latency percentiles. Used by the benchmarks
// in bench/ to compare datapaths side by side; it is not a test.
//
// usage: connect_load ADDRESS PORT SECONDS [THREADS]
//        connect_load --serve ADDRESS PORT [THREADS]   accept and close connections forever
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace {

struct Target {
  sockaddr_storage address{};
  socklen_t length = 0;
};

bool parseTarget(const char* text, int port, Target& target) {
  auto* v4 = reinterpret_cast<sockaddr_in*>(&target.address);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&target.address);
  if (inet_pton(AF_INET, text, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    target.length = sizeof(*v4);
    return true;
  }
  if (inet_pton(AF_INET6, text, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    target.length = sizeof(*v6);
    return true;
  }
  return false;
}

struct WorkerResult {
  std::vector<uint32_t> latencies_ns;  // connect() only
  uint64_t failures = 0;
};

void work(const Target& target, std::chrono::steady_clock::time_point until,
          WorkerResult& result) {
  result.latencies_ns.reserve(1 << 20);
  while (std::chrono::steady_clock::now() < until) {
    int fd = socket(target.address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    // An RST close keeps TIME_WAIT sockets from exhausting ephemeral ports in long runs.
    linger hard{1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard));
    auto started = std::chrono::steady_clock::now();
    int rc = connect(fd, reinterpret_cast<const sockaddr*>(&target.address), target.length);
    auto took = std::chrono::steady_clock::now() - started;
    if (rc == 0) {
      result.latencies_ns.push_back(static_cast<uint32_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(took).count()));
    } else {
      result.failures += 1;
    }
    close(fd);
  }
}

double percentile(std::vector<uint32_t>& values, double fraction) {
  if (values.empty()) {
    return 0;
  }
  size_t index = std::min(values.size() - 1, static_cast<size_t>(fraction * values.size()));
  std::nth_element(values.begin(), values.begin() + index, values.end());
  return values[index] / 1000.0;
}

// Accepts and closes connections until killed, so the client never fills the accept queue.
int serve(const Target& target, int threads) {
  int listener = socket(target.address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int on = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
  if (bind(listener, reinterpret_cast<const sockaddr*>(&target.address), target.length) != 0 ||
      listen(listener, 4096) != 0) {
    std::perror("connect_load: listen");
    return 1;
  }
  std::printf("listening\n");
  std::fflush(stdout);
  std::vector<std::thread> acceptors;
  for (int i = 0; i < threads; i++) {
    acceptors.emplace_back([listener] {
      for (;;) {
        int fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd >= 0) {
          close(fd);
        }
      }
    });
  }
  for (auto& acceptor : acceptors) {
    acceptor.join();
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 4 && std::strcmp(argv[1], "--serve") == 0) {
    Target target;
    if (!parseTarget(argv[2], std::atoi(argv[3]), target)) {
      std::fprintf(stderr, "connect_load: %s is not a numeric address\n", argv[2]);
      return 2;
    }
    return serve(target, argc > 4 ? std::max(1, std::atoi(argv[4])) : 1);
  }
  if (argc < 4) {
    std::fprintf(stderr, "usage: connect_load ADDRESS PORT SECONDS [THREADS]\n");
    return 2;
  }
  Target target;
  if (!parseTarget(argv[1], std::atoi(argv[2]), target)) {
    std::fprintf(stderr, "connect_load: %s is not a numeric IPv4 or IPv6 address\n", argv[1]);
    return 2;
  }
  const double seconds = std::atof(argv[3]);
  const int threads = argc > 4 ? std::max(1, std::atoi(argv[4])) : 1;

  auto started = std::chrono::steady_clock::now();
  auto until = started + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                             std::chrono::duration<double>(seconds));
  std::vector<WorkerResult> results(threads);
  std::vector<std::thread> workers;
  for (int i = 0; i < threads; i++) {
    workers.emplace_back(work, std::cref(target), until, std::ref(results[i]));
  }
  for (auto& worker : workers) {
    worker.join();
  }
  double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  std::vector<uint32_t> all;
  uint64_t failures = 0;
  for (auto& result : results) {
    all.insert(all.end(), result.latencies_ns.begin(), result.latencies_ns.end());
    failures += result.failures;
  }
  // One line of JSON, for scripts; the figures are per run, not judged here.
  std::printf("{\"connections\": %zu, \"failures\": %llu, \"seconds\": %.3f, "
              "\"connections_per_second\": %.0f, \"connect_p50_us\": %.1f, "
              "\"connect_p99_us\": %.1f}\n",
              all.size(), static_cast<unsigned long long>(failures), elapsed,
              all.size() / elapsed, percentile(all, 0.50), percentile(all, 0.99));
  return 0;
}
