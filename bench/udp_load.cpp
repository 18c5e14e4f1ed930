// udp_load: sends small UDP datagrams to one server as fast as one thread can for a while, or
// receives and counts them, and prints the rate as one line of JSON. Used by bench/compare.py
// to compare datapaths side by side; it is not a test.
//
// usage: udp_load ADDRESS PORT SECONDS [SIZE]   send SIZE-byte datagrams (default 64), each
//                                               with its destination (unconnected sendmmsg)
//        udp_load --serve ADDRESS PORT SECONDS  count datagrams for SECONDS after the first one
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kBatch = 32;

bool parseAddress(const char* text, int port, sockaddr_in& address) {
  address = {};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  return inet_pton(AF_INET, text, &address.sin_addr) == 1;
}

double secondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

int send(const sockaddr_in& target, double seconds, size_t size) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  std::vector<char> payload(size, 'u');
  iovec iov{payload.data(), payload.size()};
  mmsghdr messages[kBatch] = {};
  for (auto& message : messages) {
    message.msg_hdr.msg_name = const_cast<sockaddr_in*>(&target);
    message.msg_hdr.msg_namelen = sizeof(target);
    message.msg_hdr.msg_iov = &iov;
    message.msg_hdr.msg_iovlen = 1;
  }
  uint64_t sent = 0;
  uint64_t errors = 0;
  const auto start = Clock::now();
  while (secondsSince(start) < seconds) {
    int n = sendmmsg(fd, messages, kBatch, 0);
    if (n > 0) {
      sent += static_cast<uint64_t>(n);
    } else {
      errors += 1;
    }
  }
  const double elapsed = secondsSince(start);
  close(fd);
  std::printf("{\"sent\": %llu, \"send_errors\": %llu, \"seconds\": %.3f, "
              "\"sent_per_second\": %.0f}\n",
              static_cast<unsigned long long>(sent), static_cast<unsigned long long>(errors),
              elapsed, sent / elapsed);
  return 0;
}

// Counts from the first datagram on, so the sender's start-up does not dilute the rate. Stops
// after SECONDS, or after a second without datagrams once some arrived.
int serve(const sockaddr_in& address, double seconds) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  int buffer = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffer, sizeof(buffer));
  timeval wait{0, 200000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof(wait));
  if (bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
    std::perror("udp_load: bind");
    return 1;
  }
  std::printf("listening\n");
  std::fflush(stdout);

  std::vector<char> buffers(kBatch * 2048);
  iovec iovs[kBatch];
  mmsghdr messages[kBatch] = {};
  for (int i = 0; i < kBatch; i++) {
    iovs[i] = {buffers.data() + i * 2048, 2048};
    messages[i].msg_hdr.msg_iov = &iovs[i];
    messages[i].msg_hdr.msg_iovlen = 1;
  }
  uint64_t received = 0;
  Clock::time_point first;
  Clock::time_point last;
  const auto listening = Clock::now();
  for (;;) {
    int n = recvmmsg(fd, messages, kBatch, 0, nullptr);
    if (n > 0) {
      if (received == 0) {
        first = Clock::now();
      }
      received += static_cast<uint64_t>(n);
      last = Clock::now();
    }
    if (received > 0 && (secondsSince(first) >= seconds || secondsSince(last) > 1.0)) {
      break;
    }
    if (received == 0 && secondsSince(listening) > seconds + 30) {
      break;  // the sender never came: report zero rather than wait forever
    }
  }
  close(fd);
  const double elapsed = received > 0 ? std::chrono::duration<double>(last - first).count() : 0;
  std::printf("{\"received\": %llu, \"seconds\": %.3f, \"received_per_second\": %.0f}\n",
              static_cast<unsigned long long>(received), elapsed,
              elapsed > 0 ? received / elapsed : 0.0);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const bool serving = argc >= 2 && std::strcmp(argv[1], "--serve") == 0;
  const int first = serving ? 2 : 1;
  if (argc < first + 3) {
    std::fprintf(stderr, "usage: udp_load ADDRESS PORT SECONDS [SIZE]\n"
                         "       udp_load --serve ADDRESS PORT SECONDS\n");
    return 2;
  }
  sockaddr_in address{};
  if (!parseAddress(argv[first], std::atoi(argv[first + 1]), address)) {
    std::fprintf(stderr, "udp_load: %s is not a numeric IPv4 address\n", argv[first]);
    return 2;
  }
  const double seconds = std::atof(argv[first + 2]);
  if (serving) {
    return serve(address, seconds);
  }
  const size_t size = argc > first + 3 ? std::strtoul(argv[first + 3], nullptr, 10) : 64;
  return send(address, seconds, size);
}
