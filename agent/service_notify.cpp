#include "service_notify.hpp"

#include <systemd/sd-daemon.h>
#include <time.h>

#include <cstring>

#include "logging.hpp"

namespace mseg::agent {
namespace {

uint64_t monotonicMicroseconds() {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<uint64_t>(now.tv_sec) * 1000000u + static_cast<uint64_t>(now.tv_nsec) / 1000u;
}

// A status line is one line: systemd ends the assignment at the newline.
std::string statusLine(const std::string& text) {
  std::string line = text.substr(0, text.find('\n'));
  return "STATUS=" + line;
}

}  // namespace

ServiceNotifier::ServiceNotifier() {
  uint64_t usec = 0;
  // Positive when WATCHDOG_USEC is set (and WATCHDOG_PID, if set, is this process).
  if (sd_watchdog_enabled(0, &usec) > 0) {
    watchdog_usec_ = usec;
  }
}

void ServiceNotifier::ready(const std::string& status) const {
  send("READY=1\n" + statusLine(status));
}

void ServiceNotifier::reloading(const std::string& status) const {
  send("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(monotonicMicroseconds()) + "\n" +
       statusLine(status));
}

void ServiceNotifier::stopping(const std::string& status) const {
  send("STOPPING=1\n" + statusLine(status));
}

void ServiceNotifier::status(const std::string& status) const { send(statusLine(status)); }

void ServiceNotifier::failed(const std::string& status, int err) const {
  send(statusLine(status) + "\nERRNO=" + std::to_string(err));
}

void ServiceNotifier::watchdog() const {
  if (watchdog_usec_ > 0) {
    send("WATCHDOG=1");
  }
}

void ServiceNotifier::send(const std::string& message) const {
  int sent = sd_notify(0, message.c_str());
  // 0 means no service manager listens: the agent runs by hand, which is fine.
  if (sent < 0) {
    logger("agent")->warn("cannot notify the service manager, systemd may time out the unit "
                          "err={}", std::strerror(-sent));
  }
}

}  // namespace mseg::agent
