// Network namespaces and veth links for privileged tests, made with iproute2 so that they show in
// `ip netns list` like the lab's. Every name this library creates starts with
// ownedNamePrefix(), so a test can check that it left nothing behind.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "mseg/result.hpp"

namespace mseg::testing {

// "mseg-t-<pid>-": the start of every namespace and cgroup name this process creates.
std::string ownedNamePrefix();

// A unique name for this process: ownedNamePrefix() followed by a counter. The first call in a
// process removes what killed test processes left behind (sweepLeftoversOnce, leftovers.hpp).
std::string uniqueName();

// Whether `cidr` ("198.18.7.1/24", "fd00:7::1/64") lies in the ranges tests may use:
// 198.18.0.0/15 (RFC 2544 benchmarking) and fd00::/8 (unique local). Loopback is not a cidr
// tests need to assign.
bool isTestAddress(std::string_view cidr);

// A network namespace `mseg-t-<pid>-<n>` with its loopback up, deleted with the object.
// Processes still inside keep the kernel namespace alive but lose its name. Not thread-safe.
class NetNamespace {
public:
  // Runs `ip netns add` and `ip -n <name> link set lo up`. Fails with the command's stderr.
  static Result<NetNamespace> create();

  NetNamespace(NetNamespace&& other) noexcept;
  NetNamespace& operator=(NetNamespace&& other) noexcept;
  NetNamespace(const NetNamespace&) = delete;
  NetNamespace& operator=(const NetNamespace&) = delete;
  ~NetNamespace();

  const std::string& name() const { return name_; }

  // The namespace file that setns() and Placement::netns take: /run/netns/<name>.
  std::filesystem::path path() const;

  // Runs `ip -n <name> args...`; fails with ip's stderr.
  Status ip(const std::vector<std::string>& args) const;

private:
  explicit NetNamespace(std::string name) : name_(std::move(name)) {}

  std::string name_;
};

// One end of a veth pair: its interface name in its namespace and the addresses it gets.
struct VethEnd {
  std::string name;       // at most 15 characters
  std::string ipv4_cidr;  // empty for none, else inside 198.18.0.0/15, e.g. "198.18.7.1/24"
  std::string ipv6_cidr;  // empty for none, else inside fd00::/8, e.g. "fd00:7::1/64"
};

// Two ends on subnet `n` (0 to 255): a is 198.18.<n>.1/24 and fd00:<n>::1/64, b is .2 and ::2,
// both interfaces named veth<n>.
std::pair<VethEnd, VethEnd> vethSubnet(int n);

// A veth pair with end `a` in one namespace and end `b` in another, addressed and up. Creating
// it from inside namespace a, with the peer created directly in b, means no interface ever
// appears in the caller's namespace. The destructor deletes the link (both ends). Not
// thread-safe.
class VethPair {
public:
  // Fails when an address is outside the test ranges (see isTestAddress), when ip fails, or when
  // both ends are not operationally up within 5 s. IPv6 addresses skip duplicate address
  // detection, so they are usable when this returns.
  static Result<VethPair> create(const NetNamespace& ns_a, const VethEnd& a,
                                 const NetNamespace& ns_b, const VethEnd& b);

  VethPair(VethPair&& other) noexcept;
  VethPair& operator=(VethPair&& other) noexcept;
  VethPair(const VethPair&) = delete;
  VethPair& operator=(const VethPair&) = delete;
  ~VethPair();

private:
  VethPair(std::string netns, std::string name)
      : netns_(std::move(netns)), name_(std::move(name)) {}
  void destroy();

  std::string netns_;  // namespace of end a
  std::string name_;   // end a's interface name
};

// Runs `fn` in a forked child that entered `ns` and returns its return value (0 to 255), the
// natural way to run a socket helper from sockets.hpp on the far side of a veth:
//   runInNamespace(client, [] { return tcpConnect("198.18.7.2", 80, 1s); })
// ETIMEDOUT when the child runs longer than `timeout` (it is then killed).
Result<int> runInNamespace(const NetNamespace& ns, const std::function<int()>& fn,
                           std::chrono::milliseconds timeout = std::chrono::seconds(30));

}  // namespace mseg::testing
