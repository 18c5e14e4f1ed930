// A stand-in for systemd's notification socket. systemd is not PID 1 on the test machines, so a
// test points a child's NOTIFY_SOCKET at this datagram socket and reads what the child reports
// to its service manager (READY=1, RELOADING=1, WATCHDOG=1, STATUS=..., STOPPING=1).
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "mseg/result.hpp"
#include "support/unique_fd.hpp"

namespace mseg::testing {

class NotifySocket {
public:
  // Binds a datagram socket in the temporary directory. The destructor removes it.
  static Result<NotifySocket> create();

  NotifySocket(NotifySocket&& other) noexcept;
  NotifySocket& operator=(NotifySocket&&) = delete;
  NotifySocket(const NotifySocket&) = delete;
  NotifySocket& operator=(const NotifySocket&) = delete;
  ~NotifySocket();

  // The value for NOTIFY_SOCKET.
  const std::filesystem::path& path() const { return path_; }

  // Reads messages until one has a line equal to `line` (e.g. "READY=1") and returns that
  // whole message; ETIMEDOUT when none came within `timeout`. Every message read, matching or
  // not, is kept in received().
  Result<std::string> waitFor(std::string_view line, std::chrono::milliseconds timeout);

  // Every message read so far, oldest first.
  const std::vector<std::string>& received() const { return received_; }

private:
  NotifySocket(UniqueFd fd, std::filesystem::path path)
      : fd_(std::move(fd)), path_(std::move(path)) {}

  UniqueFd fd_;
  std::filesystem::path path_;  // empty once moved from
  std::vector<std::string> received_;
  size_t matched_ = 0;  // messages before this index were already returned or skipped
};

// The value of `key` in a notification message ("STATUS" in "READY=1\nSTATUS=x"), or "".
std::string notifyField(std::string_view message, std::string_view key);

}  // namespace mseg::testing
