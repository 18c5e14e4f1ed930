// Small socket clients and echo servers for privileged tests. The clients act in the network
// namespace of the calling process and return 0 or an errno value, so that a test can run them
// in a forked child (runInNamespace, runIn) and read the errno back as the exit status: EPERM
// is what a cgroup BPF program's deny looks like to connect() and sendmsg(), ETIMEDOUT a silently
// dropped packet, ECONNREFUSED a closed port.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "mseg/result.hpp"
#include "support/subprocess.hpp"

namespace mseg::testing {

// A numeric IPv4 or IPv6 address and a port, ready for bind() and connect().
struct SocketAddress {
  sockaddr_storage storage{};
  socklen_t length = 0;

  int family() const { return storage.ss_family; }
  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage); }
};

// Parses "198.18.7.2" or "fd00:7::2" (no brackets, no names); nullopt when it is neither.
std::optional<SocketAddress> makeSocketAddress(std::string_view address, uint16_t port);

// Opens a TCP connection and closes it. 0 once connected; ETIMEDOUT when it was not within
// `timeout`; otherwise the connect errno (ECONNREFUSED, EPERM, ENETUNREACH...). EINVAL for an
// address makeSocketAddress rejects.
int tcpConnect(std::string_view address, uint16_t port, std::chrono::milliseconds timeout);

// Connects, sends `payload` and reads the same number of bytes back, all within `timeout`.
// 0 when they equal the payload (an echo round trip); EBADMSG when they differ; ETIMEDOUT;
// ECONNRESET when the peer closed early; else the failing call's errno.
int tcpSendRecv(std::string_view address, uint16_t port, std::string_view payload,
                std::chrono::milliseconds timeout);

// Sends `payload` in one datagram from a connected UDP socket and waits for one back, all within
// `timeout`. 0 when the reply equals the payload; EBADMSG when it differs; ETIMEDOUT when none
// came; ECONNREFUSED when an ICMP port unreachable came; else the failing call's errno.
int udpSendRecv(std::string_view address, uint16_t port, std::string_view payload,
                std::chrono::milliseconds timeout);

// Sends one ICMP echo request (ICMPv6 for an IPv6 address) from a raw socket, which needs
// CAP_NET_RAW, and waits for the matching echo reply. 0 on a reply within `timeout`; ETIMEDOUT
// without one; else the errno of socket() or sendto() (EPERM when a cgroup program dropped it).
int pingOnce(std::string_view address, std::chrono::milliseconds timeout);

// Sends one echo request from a datagram ("ping") socket, as unprivileged ping does, and waits
// for its reply; with `connect_first` the socket is connected to the address and sends with
// send(), else it sends with sendto(). Needs the caller's group in net.ipv4.ping_group_range of
// its network namespace. 0 on a reply within `timeout`; ETIMEDOUT without one; else the errno
// of socket(), connect() or the send.
int pingSocketOnce(std::string_view address, bool connect_first,
                   std::chrono::milliseconds timeout);

// Echo servers in a child process placed in a test cgroup and network namespace. They serve until
// destroyed (the child is killed then). bind_address "::" listens on every IPv4 and IPv6 address
// of the namespace; port 0 picks a free port, which port() tells. start() returns once the
// socket is bound (and listening, for TCP), so no test needs to wait for the server. Fails with
// the child's error message when it cannot bind.
class TcpEchoServer {
public:
  static Result<TcpEchoServer> start(const Placement& where,
                                     std::string bind_address = "::", uint16_t port = 0);

  uint16_t port() const { return port_; }
  pid_t pid() const { return process_.pid(); }

private:
  TcpEchoServer(Subprocess process, uint16_t port) : process_(std::move(process)), port_(port) {}

  Subprocess process_;
  uint16_t port_;
};

class UdpEchoServer {
public:
  static Result<UdpEchoServer> start(const Placement& where,
                                     std::string bind_address = "::", uint16_t port = 0);

  uint16_t port() const { return port_; }
  pid_t pid() const { return process_.pid(); }

private:
  UdpEchoServer(Subprocess process, uint16_t port) : process_(std::move(process)), port_(port) {}

  Subprocess process_;
  uint16_t port_;
};

}  // namespace mseg::testing
