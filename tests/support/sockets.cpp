#include "support/sockets.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/icmp6.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "support/unique_fd.hpp"

namespace mseg::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

constexpr auto kServerReadyTimeout = std::chrono::seconds(5);
constexpr auto kServerReadTimeout = std::chrono::seconds(5);

// 0 when `events` are pending on `fd` before `deadline`, ETIMEDOUT when not, or poll's errno.
// Error and hang-up conditions count as pending: the next call on the socket reports them.
int waitFor(int fd, short events, steady_clock::time_point deadline) {
  while (true) {
    auto left = std::chrono::ceil<milliseconds>(deadline - steady_clock::now());
    pollfd entry{fd, events, 0};
    int n = poll(&entry, 1, static_cast<int>(std::max<int64_t>(left.count(), 0)));
    if (n > 0) {
      return 0;
    }
    if (n == 0) {
      return ETIMEDOUT;
    }
    if (errno != EINTR) {
      return errno;
    }
  }
}

// A non-blocking socket of `type` connected to `to` before `deadline`, in `fd`. Returns 0 or the
// errno of the step that failed.
int openConnected(const SocketAddress& to, int type, steady_clock::time_point deadline,
                  UniqueFd& fd) {
  fd.reset(socket(to.family(), type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) {
    return errno;
  }
  if (connect(fd.get(), to.get(), to.length) == 0) {
    return 0;
  }
  if (errno != EINPROGRESS) {
    return errno;
  }
  if (int waited = waitFor(fd.get(), POLLOUT, deadline); waited != 0) {
    return waited;
  }
  int err = 0;
  socklen_t length = sizeof(err);
  if (getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &length) != 0) {
    return errno;
  }
  return err;
}

uint16_t internetChecksum(const uint8_t* data, size_t length) {
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < length; i += 2) {
    sum += static_cast<uint32_t>(data[i] << 8 | data[i + 1]);
  }
  if (length % 2 != 0) {
    sum += static_cast<uint32_t>(data[length - 1] << 8);
  }
  while (sum >> 16 != 0) {
    sum = (sum & 0xffff) + (sum >> 16);
  }
  return static_cast<uint16_t>(~sum);
}

bool sameHost(const SocketAddress& expected, const sockaddr_storage& from) {
  if (expected.family() != from.ss_family) {
    return false;
  }
  if (from.ss_family == AF_INET) {
    return reinterpret_cast<const sockaddr_in&>(expected.storage).sin_addr.s_addr ==
           reinterpret_cast<const sockaddr_in&>(from).sin_addr.s_addr;
  }
  return std::memcmp(&reinterpret_cast<const sockaddr_in6&>(expected.storage).sin6_addr,
                     &reinterpret_cast<const sockaddr_in6&>(from).sin6_addr, sizeof(in6_addr)) == 0;
}

// Child side of the echo servers: a bound socket, or -1 after saying why on stderr.
int bindServerSocket(const std::string& address, uint16_t port, int type) {
  auto local = makeSocketAddress(address, port);
  if (!local) {
    std::fprintf(stderr, "echo server: not a numeric address: %s\n", address.c_str());
    return -1;
  }
  int fd = socket(local->family(), type | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    std::fprintf(stderr, "echo server: socket: %s\n", std::strerror(errno));
    return -1;
  }
  int on = 1;
  int off = 0;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
  if (local->family() == AF_INET6) {
    // "::" then takes IPv4 too, as ::ffff:a.b.c.d.
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
  }
  if (bind(fd, local->get(), local->length) != 0 || (type == SOCK_STREAM && listen(fd, 64) != 0)) {
    std::fprintf(stderr, "echo server: bind [%s]:%u: %s\n", address.c_str(), port,
                 std::strerror(errno));
    return -1;
  }
  return fd;
}

uint16_t boundPort(int fd) {
  sockaddr_storage local{};
  socklen_t length = sizeof(local);
  getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length);
  return ntohs(local.ss_family == AF_INET ? reinterpret_cast<sockaddr_in&>(local).sin_port
                                          : reinterpret_cast<sockaddr_in6&>(local).sin6_port);
}

// One connection at a time: enough for tests, and a silent client is dropped after a timeout.
int serveTcpEcho(int listener) {
  timeval read_timeout{std::chrono::seconds(kServerReadTimeout).count(), 0};
  while (true) {
    UniqueFd conn(accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
    if (!conn) {
      if (errno == EINTR || errno == ECONNABORTED) {
        continue;
      }
      return errno;
    }
    setsockopt(conn.get(), SOL_SOCKET, SO_RCVTIMEO, &read_timeout, sizeof(read_timeout));
    char buffer[4096];
    ssize_t n = 0;
    while ((n = recv(conn.get(), buffer, sizeof(buffer), 0)) > 0) {
      if (send(conn.get(), buffer, static_cast<size_t>(n), MSG_NOSIGNAL) != n) {
        break;
      }
    }
  }
}

int serveUdpEcho(int fd) {
  char buffer[65536];
  while (true) {
    sockaddr_storage peer{};
    socklen_t length = sizeof(peer);
    ssize_t n =
        recvfrom(fd, buffer, sizeof(buffer), 0, reinterpret_cast<sockaddr*>(&peer), &length);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return errno;
    }
    sendto(fd, buffer, static_cast<size_t>(n), 0, reinterpret_cast<sockaddr*>(&peer), length);
  }
}

// Forks the server child and waits for the port it reports through a pipe once bound.
Result<std::pair<Subprocess, uint16_t>> startEchoServer(const Placement& where, int type,
                                                        const std::string& bind_address,
                                                        uint16_t port) {
  std::array<int, 2> ready{};
  if (pipe2(ready.data(), O_CLOEXEC) != 0) {
    return Error::fromErrno(errno, "echo server: pipe2");
  }
  UniqueFd ready_read(ready[0]);
  UniqueFd ready_write(ready[1]);

  auto child = Subprocess::fork(where, [&]() -> int {
    ready_read.reset();
    int fd = bindServerSocket(bind_address, port, type);
    if (fd < 0) {
      return 1;
    }
    uint16_t bound = boundPort(fd);
    if (write(ready_write.get(), &bound, sizeof(bound)) != sizeof(bound)) {
      return 1;
    }
    ready_write.reset();
    return type == SOCK_STREAM ? serveTcpEcho(fd) : serveUdpEcho(fd);
  });
  if (!child) {
    return child.error().wrap("echo server");
  }
  ready_write.reset();

  uint16_t bound = 0;
  int waited = waitFor(ready_read.get(), POLLIN, steady_clock::now() + kServerReadyTimeout);
  if (waited == 0 && read(ready_read.get(), &bound, sizeof(bound)) == sizeof(bound)) {
    return std::pair<Subprocess, uint16_t>(std::move(*child), bound);
  }
  (void)child->wait(milliseconds(1000));
  std::string why = child->err().empty() ? std::strerror(waited ? waited : EIO) : child->err();
  while (!why.empty() && why.back() == '\n') {
    why.pop_back();
  }
  return Error(waited ? waited : EIO, "echo server did not start: " + why);
}

}  // namespace

std::optional<SocketAddress> makeSocketAddress(std::string_view address, uint16_t port) {
  SocketAddress result;
  std::string text(address);
  auto* v4 = reinterpret_cast<sockaddr_in*>(&result.storage);
  if (inet_pton(AF_INET, text.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    result.length = sizeof(sockaddr_in);
    return result;
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&result.storage);
  if (inet_pton(AF_INET6, text.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    result.length = sizeof(sockaddr_in6);
    return result;
  }
  return std::nullopt;
}

int tcpConnect(std::string_view address, uint16_t port, milliseconds timeout) {
  auto to = makeSocketAddress(address, port);
  if (!to) {
    return EINVAL;
  }
  UniqueFd fd;
  return openConnected(*to, SOCK_STREAM, steady_clock::now() + timeout, fd);
}

int tcpSendRecv(std::string_view address, uint16_t port, std::string_view payload,
                milliseconds timeout) {
  auto to = makeSocketAddress(address, port);
  if (!to) {
    return EINVAL;
  }
  auto deadline = steady_clock::now() + timeout;
  UniqueFd fd;
  if (int err = openConnected(*to, SOCK_STREAM, deadline, fd); err != 0) {
    return err;
  }

  for (size_t sent = 0; sent < payload.size();) {
    if (int err = waitFor(fd.get(), POLLOUT, deadline); err != 0) {
      return err;
    }
    ssize_t n = send(fd.get(), payload.data() + sent, payload.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
      return errno;
    }
    sent += n > 0 ? static_cast<size_t>(n) : 0;
  }

  std::string reply;
  while (reply.size() < payload.size()) {
    if (int err = waitFor(fd.get(), POLLIN, deadline); err != 0) {
      return err;
    }
    char buffer[4096];
    ssize_t n = recv(fd.get(), buffer, sizeof(buffer), 0);
    if (n == 0) {
      return ECONNRESET;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
      return errno;
    }
    reply.append(buffer, n > 0 ? static_cast<size_t>(n) : 0);
  }
  return reply == payload ? 0 : EBADMSG;
}

int udpSendRecv(std::string_view address, uint16_t port, std::string_view payload,
                milliseconds timeout) {
  auto to = makeSocketAddress(address, port);
  if (!to) {
    return EINVAL;
  }
  auto deadline = steady_clock::now() + timeout;
  UniqueFd fd;
  if (int err = openConnected(*to, SOCK_DGRAM, deadline, fd); err != 0) {
    return err;
  }
  if (send(fd.get(), payload.data(), payload.size(), 0) < 0) {
    return errno;
  }
  if (int err = waitFor(fd.get(), POLLIN, deadline); err != 0) {
    return err;
  }
  std::string reply(65536, '\0');
  ssize_t n = recv(fd.get(), reply.data(), reply.size(), 0);
  if (n < 0) {
    return errno;
  }
  reply.resize(static_cast<size_t>(n));
  return reply == payload ? 0 : EBADMSG;
}

int pingOnce(std::string_view address, milliseconds timeout) {
  auto target = makeSocketAddress(address, 0);
  if (!target) {
    return EINVAL;
  }
  bool v6 = target->family() == AF_INET6;
  int protocol = v6 ? static_cast<int>(IPPROTO_ICMPV6) : static_cast<int>(IPPROTO_ICMP);
  UniqueFd fd(socket(target->family(), SOCK_RAW | SOCK_CLOEXEC, protocol));
  if (!fd) {
    return errno;
  }
  if (v6) {
    icmp6_filter filter{};
    ICMP6_FILTER_SETBLOCKALL(&filter);
    ICMP6_FILTER_SETPASS(ICMP6_ECHO_REPLY, &filter);
    setsockopt(fd.get(), IPPROTO_ICMPV6, ICMP6_FILTER, &filter, sizeof(filter));
  }

  // A raw socket sees every ICMP message of the namespace: the identifier and sequence number
  // pick out the reply to this request.
  static std::atomic<uint16_t> sequence{0};
  uint16_t id = static_cast<uint16_t>(getpid());
  uint16_t seq = sequence++;
  std::array<uint8_t, 8 + 16> request{};
  request[0] = v6 ? ICMP6_ECHO_REQUEST : ICMP_ECHO;
  request[4] = static_cast<uint8_t>(id >> 8);
  request[5] = static_cast<uint8_t>(id);
  request[6] = static_cast<uint8_t>(seq >> 8);
  request[7] = static_cast<uint8_t>(seq);
  std::memcpy(request.data() + 8, "microseg-test-pi", 16);
  if (!v6) {
    // The kernel fills in the ICMPv6 checksum itself, which covers a pseudo-header.
    uint16_t checksum = internetChecksum(request.data(), request.size());
    request[2] = static_cast<uint8_t>(checksum >> 8);
    request[3] = static_cast<uint8_t>(checksum);
  }
  if (sendto(fd.get(), request.data(), request.size(), 0, target->get(), target->length) < 0) {
    return errno;
  }

  auto deadline = steady_clock::now() + timeout;
  while (true) {
    if (int err = waitFor(fd.get(), POLLIN, deadline); err != 0) {
      return err;
    }
    std::array<uint8_t, 1500> reply{};
    sockaddr_storage from{};
    socklen_t from_length = sizeof(from);
    ssize_t n = recvfrom(fd.get(), reply.data(), reply.size(), 0,
                         reinterpret_cast<sockaddr*>(&from), &from_length);
    if (n < 0) {
      return errno;
    }
    // IPv4 raw sockets deliver the IP header too; IPv6 ones start at the ICMPv6 header.
    size_t offset = v6 ? 0 : static_cast<size_t>(reply[0] & 0x0f) * 4;
    if (static_cast<size_t>(n) < offset + 8 || !sameHost(*target, from)) {
      continue;
    }
    const uint8_t* icmp = reply.data() + offset;
    bool is_reply = icmp[0] == (v6 ? ICMP6_ECHO_REPLY : ICMP_ECHOREPLY);
    if (is_reply && icmp[4] == request[4] && icmp[5] == request[5] && icmp[6] == request[6] &&
        icmp[7] == request[7]) {
      return 0;
    }
  }
}

int pingSocketOnce(std::string_view address, bool connect_first, milliseconds timeout) {
  auto target = makeSocketAddress(address, 0);
  if (!target) {
    return EINVAL;
  }
  const bool v6 = target->family() == AF_INET6;
  UniqueFd fd(socket(target->family(), SOCK_DGRAM | SOCK_CLOEXEC,
                     v6 ? static_cast<int>(IPPROTO_ICMPV6) : static_cast<int>(IPPROTO_ICMP)));
  if (!fd) {
    return errno;
  }
  // The kernel sets the identifier (the socket's port) and the checksum; the sequence number
  // is ours.
  static std::atomic<uint16_t> sequence{0};
  const uint16_t seq = sequence++;
  std::array<uint8_t, 8 + 16> request{};
  request[0] = v6 ? ICMP6_ECHO_REQUEST : ICMP_ECHO;
  request[6] = static_cast<uint8_t>(seq >> 8);
  request[7] = static_cast<uint8_t>(seq);
  std::memcpy(request.data() + 8, "microseg-test-pi", 16);
  if (connect_first) {
    if (connect(fd.get(), target->get(), target->length) != 0) {
      return errno;
    }
    if (send(fd.get(), request.data(), request.size(), 0) < 0) {
      return errno;
    }
  } else if (sendto(fd.get(), request.data(), request.size(), 0, target->get(),
                    target->length) < 0) {
    return errno;
  }

  // A ping socket receives only the replies to its own identifier.
  const auto deadline = steady_clock::now() + timeout;
  while (true) {
    if (int err = waitFor(fd.get(), POLLIN, deadline); err != 0) {
      return err;
    }
    std::array<uint8_t, 1500> reply{};
    ssize_t n = recv(fd.get(), reply.data(), reply.size(), 0);
    if (n < 0) {
      return errno;
    }
    if (n >= 8 && reply[0] == (v6 ? ICMP6_ECHO_REPLY : ICMP_ECHOREPLY) &&
        reply[6] == request[6] && reply[7] == request[7]) {
      return 0;
    }
  }
}

Result<TcpEchoServer> TcpEchoServer::start(const Placement& where, std::string bind_address,
                                           uint16_t port) {
  auto started = startEchoServer(where, SOCK_STREAM, bind_address, port);
  if (!started) {
    return started.error();
  }
  return TcpEchoServer(std::move(started->first), started->second);
}

Result<UdpEchoServer> UdpEchoServer::start(const Placement& where, std::string bind_address,
                                           uint16_t port) {
  auto started = startEchoServer(where, SOCK_DGRAM, bind_address, port);
  if (!started) {
    return started.error();
  }
  return UdpEchoServer(std::move(started->first), started->second);
}

}  // namespace mseg::testing
