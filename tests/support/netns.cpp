#include "support/netns.hpp"

#include <arpa/inet.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <charconv>
#include <cstdio>
#include <utility>

#include "support/leftovers.hpp"
#include "support/poll.hpp"
#include "support/subprocess.hpp"

namespace mseg::testing {
namespace {

constexpr size_t kMaxInterfaceName = 15;  // IFNAMSIZ less the terminating NUL
constexpr auto kLinkUpTimeout = std::chrono::seconds(5);

Status checkEnd(const VethEnd& end) {
  if (end.name.empty() || end.name.size() > kMaxInterfaceName) {
    return Error::invalid("veth name '" + end.name + "' must have 1 to 15 characters");
  }
  for (const auto& cidr : {end.ipv4_cidr, end.ipv6_cidr}) {
    if (!cidr.empty() && !isTestAddress(cidr)) {
      return Error::invalid("address " + cidr +
                            " is outside 198.18.0.0/15 and fd00::/8, the ranges tests may use");
    }
  }
  return {};
}

Status configureEnd(const NetNamespace& ns, const VethEnd& end) {
  if (!end.ipv4_cidr.empty()) {
    if (auto added = ns.ip({"addr", "add", end.ipv4_cidr, "dev", end.name}); !added) {
      return added;
    }
  }
  if (!end.ipv6_cidr.empty()) {
    // nodad: usable at once instead of tentative for a second or more.
    if (auto added = ns.ip({"addr", "add", end.ipv6_cidr, "dev", end.name, "nodad"}); !added) {
      return added;
    }
  }
  return ns.ip({"link", "set", end.name, "up"});
}

// Operational state is set asynchronously by the kernel's link watch; IPv6 routes and addresses
// of a link only work once it reads UP.
bool linkIsUp(const NetNamespace& ns, const std::string& name) {
  auto shown = runCommand({"ip", "-n", ns.name(), "-o", "link", "show", "dev", name});
  return shown && shown->status == 0 && shown->out.find(" state UP ") != std::string::npos;
}

}  // namespace

std::string ownedNamePrefix() { return "mseg-t-" + std::to_string(getpid()) + "-"; }

std::string uniqueName() {
  // Every object a test creates is named here first: the place to clear up after killed runs
  // before this process adds its own.
  sweepLeftoversOnce();
  static std::atomic<int> counter{0};
  return ownedNamePrefix() + std::to_string(counter++);
}

bool isTestAddress(std::string_view cidr) {
  auto slash = cidr.find('/');
  if (slash == std::string_view::npos) {
    return false;
  }
  std::string address(cidr.substr(0, slash));
  std::string_view length_text = cidr.substr(slash + 1);
  int length = -1;
  auto [end, ec] =
      std::from_chars(length_text.data(), length_text.data() + length_text.size(), length);
  if (ec != std::errc() || end != length_text.data() + length_text.size() || length < 0) {
    return false;
  }

  std::array<unsigned char, 16> bytes{};
  if (inet_pton(AF_INET, address.c_str(), bytes.data()) == 1) {
    return length <= 32 && bytes[0] == 198 && (bytes[1] == 18 || bytes[1] == 19);
  }
  if (inet_pton(AF_INET6, address.c_str(), bytes.data()) == 1) {
    return length <= 128 && bytes[0] == 0xfd;
  }
  return false;
}

Result<NetNamespace> NetNamespace::create() {
  NetNamespace ns(uniqueName());
  if (auto added = runChecked({"ip", "netns", "add", ns.name_}); !added) {
    ns.name_.clear();  // nothing to delete
    return added.error();
  }
  if (auto up = ns.ip({"link", "set", "lo", "up"}); !up) {
    return up.error();
  }
  return ns;
}

NetNamespace::NetNamespace(NetNamespace&& other) noexcept
    : name_(std::exchange(other.name_, std::string())) {}

NetNamespace& NetNamespace::operator=(NetNamespace&& other) noexcept {
  if (this != &other) {
    NetNamespace old(std::move(*this));
    name_ = std::exchange(other.name_, std::string());
  }
  return *this;
}

NetNamespace::~NetNamespace() {
  if (name_.empty()) {
    return;
  }
  if (auto deleted = runChecked({"ip", "netns", "del", name_}); !deleted) {
    std::fprintf(stderr, "warning: test namespace left behind: %s\n",
                 deleted.error().message().c_str());
  }
}

std::filesystem::path NetNamespace::path() const {
  return std::filesystem::path("/run/netns") / name_;
}

Status NetNamespace::ip(const std::vector<std::string>& args) const {
  std::vector<std::string> argv{"ip", "-n", name_};
  argv.insert(argv.end(), args.begin(), args.end());
  return runChecked(argv);
}

std::pair<VethEnd, VethEnd> vethSubnet(int n) {
  std::string name = "veth" + std::to_string(n);
  std::string v4 = "198.18." + std::to_string(n) + ".";
  // The subnet number reads the same in the IPv6 group as in the IPv4 octet.
  std::string v6 = "fd00:" + std::to_string(n) + "::";
  return {VethEnd{name, v4 + "1/24", v6 + "1/64"}, VethEnd{name, v4 + "2/24", v6 + "2/64"}};
}

Result<VethPair> VethPair::create(const NetNamespace& ns_a, const VethEnd& a,
                                  const NetNamespace& ns_b, const VethEnd& b) {
  for (const auto* end : {&a, &b}) {
    if (auto valid = checkEnd(*end); !valid) {
      return valid.error();
    }
  }

  if (auto added = ns_a.ip(
          {"link", "add", a.name, "type", "veth", "peer", "name", b.name, "netns", ns_b.name()});
      !added) {
    return added.error();
  }
  VethPair pair(ns_a.name(), a.name);

  if (auto configured = configureEnd(ns_a, a); !configured) {
    return configured.error();
  }
  if (auto configured = configureEnd(ns_b, b); !configured) {
    return configured.error();
  }

  if (!pollUntil(
          kLinkUpTimeout, [&] { return linkIsUp(ns_a, a.name) && linkIsUp(ns_b, b.name); },
          std::chrono::milliseconds(20))) {
    return Error(ETIMEDOUT, "veth " + ns_a.name() + "/" + a.name + " - " + ns_b.name() + "/" +
                                b.name + " not up after 5 s");
  }
  return pair;
}

VethPair::VethPair(VethPair&& other) noexcept
    : netns_(std::exchange(other.netns_, std::string())),
      name_(std::exchange(other.name_, std::string())) {}

VethPair& VethPair::operator=(VethPair&& other) noexcept {
  if (this != &other) {
    destroy();
    netns_ = std::exchange(other.netns_, std::string());
    name_ = std::exchange(other.name_, std::string());
  }
  return *this;
}

VethPair::~VethPair() { destroy(); }

void VethPair::destroy() {
  // A deleted namespace took the pair with it.
  if (name_.empty() || !std::filesystem::exists(std::filesystem::path("/run/netns") / netns_)) {
    return;
  }
  if (auto deleted = runChecked({"ip", "-n", netns_, "link", "del", name_}); !deleted) {
    std::fprintf(stderr, "warning: test veth left behind: %s\n", deleted.error().message().c_str());
  }
  name_.clear();
}

Result<int> runInNamespace(const NetNamespace& ns, const std::function<int()>& fn,
                           std::chrono::milliseconds timeout) {
  return runIn(Placement{ns.path(), {}}, fn, timeout);
}

}  // namespace mseg::testing
