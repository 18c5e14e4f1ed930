// Tells the service manager (systemd, Type=notify) what the agent is doing: ready once the first
// policy enforces, reloading, stopping, a status line, and watchdog keep-alives. Every call is a
// no-op when the agent was not started by a service manager (NOTIFY_SOCKET unset).
#pragma once

#include <cstdint>
#include <string>

namespace mseg::agent {

class ServiceNotifier {
public:
  // Reads NOTIFY_SOCKET and WATCHDOG_USEC from the environment once.
  ServiceNotifier();

  // READY=1 with a status line: the unit's start (or a reload) has finished.
  void ready(const std::string& status) const;
  // RELOADING=1 with the CLOCK_MONOTONIC time systemd uses to match it to a reload request.
  void reloading(const std::string& status) const;
  void stopping(const std::string& status) const;
  void status(const std::string& status) const;
  // The start failed: the status line and the errno systemd shows in `systemctl status`.
  void failed(const std::string& status, int err) const;
  // WATCHDOG=1 when the unit has WatchdogSec= set; call at least twice per watchdog interval.
  void watchdog() const;

  bool watchdogEnabled() const { return watchdog_usec_ > 0; }

private:
  void send(const std::string& message) const;

  uint64_t watchdog_usec_ = 0;
};

}  // namespace mseg::agent
