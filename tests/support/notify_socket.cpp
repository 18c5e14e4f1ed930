#include "support/notify_socket.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>
#include <sstream>

#include "support/netns.hpp"

namespace mseg::testing {
namespace fs = std::filesystem;

Result<NotifySocket> NotifySocket::create() {
  const fs::path path = fs::temp_directory_path() / (uniqueName() + ".notify");
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.native().size() >= sizeof(address.sun_path)) {
    return Error(ENAMETOOLONG, "notify socket path " + path.string());
  }
  std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
  UniqueFd fd(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) {
    return Error::fromErrno(errno, "notify socket");
  }
  if (bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
    return Error::fromErrno(errno, "bind notify socket " + path.string());
  }
  return NotifySocket(std::move(fd), path);
}

NotifySocket::NotifySocket(NotifySocket&& other) noexcept
    : fd_(std::move(other.fd_)),
      path_(std::exchange(other.path_, {})),
      received_(std::move(other.received_)),
      matched_(other.matched_) {}

NotifySocket::~NotifySocket() {
  if (!path_.empty()) {
    std::error_code err;
    fs::remove(path_, err);
  }
}

Result<std::string> NotifySocket::waitFor(std::string_view line,
                                          std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    for (; matched_ < received_.size(); matched_++) {
      std::istringstream lines(received_[matched_]);
      for (std::string candidate; std::getline(lines, candidate);) {
        if (candidate == line) {
          return received_[matched_++];
        }
      }
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return Error(ETIMEDOUT, "no notification " + std::string(line) + " within " +
                                  std::to_string(timeout.count()) + " ms");
    }
    pollfd readable{fd_.get(), POLLIN, 0};
    if (poll(&readable, 1, static_cast<int>(left.count())) < 0 && errno != EINTR) {
      return Error::fromErrno(errno, "poll notify socket");
    }
    char buffer[4096];
    ssize_t length;
    while ((length = recv(fd_.get(), buffer, sizeof(buffer), 0)) > 0) {
      received_.emplace_back(buffer, static_cast<size_t>(length));
    }
  }
}

std::string notifyField(std::string_view message, std::string_view key) {
  std::istringstream lines{std::string(message)};
  const std::string prefix = std::string(key) + "=";
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(prefix, 0) == 0) {
      return line.substr(prefix.size());
    }
  }
  return "";
}

}  // namespace mseg::testing
