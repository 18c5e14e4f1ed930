// A real rsyslogd for the syslog output's tests: a child process listening on 127.0.0.1 only,
// with one plain TCP and one TLS (gtls) imtcp input on ports the kernel picks, each writing
// what it receives to a file of its own in the test's directory.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "mseg/result.hpp"
#include "support/subprocess.hpp"

namespace mseg::collector::testing {

// What rsyslog parsed out of one received message.
struct ReceivedMessage {
  std::string hostname;
  std::string app_name;
  std::string msgid;
  std::string msg;
};

class RsyslogServer {
public:
  // Writes rsyslog.conf into `dir` and starts `rsyslogd -n` with it, serving TLS with
  // `cert`/`key` issued by `ca` (anonymous clients: no client certificate is asked for).
  // `tcp_port`/`tls_port` 0 let the kernel pick (the usual case); a test restarting a server
  // passes the ports the previous one had. Returns once both ports are known, failing with
  // rsyslogd's stderr when it does not get there within 10 seconds.
  static Result<RsyslogServer> start(const std::filesystem::path& dir,
                                     const std::filesystem::path& ca,
                                     const std::filesystem::path& cert,
                                     const std::filesystem::path& key, uint16_t tcp_port = 0,
                                     uint16_t tls_port = 0);

  uint16_t tcpPort() const { return tcp_port_; }
  uint16_t tlsPort() const { return tls_port_; }

  // The messages received so far on each input, in order.
  std::vector<ReceivedMessage> receivedOverTcp() const { return read("tcp.log"); }
  std::vector<ReceivedMessage> receivedOverTls() const { return read("tls.log"); }

  // Polls until the input's file holds at least `count` messages or `timeout` passes.
  bool waitForTcp(size_t count, std::chrono::milliseconds timeout) const;
  bool waitForTls(size_t count, std::chrono::milliseconds timeout) const;

  // Kills rsyslogd (SIGKILL) and waits for it; also done by the destructor.
  void kill() { process_.kill(); }

private:
  RsyslogServer(std::filesystem::path dir, mseg::testing::Subprocess process)
      : dir_(std::move(dir)), process_(std::move(process)) {}
  std::vector<ReceivedMessage> read(const std::string& file) const;

  std::filesystem::path dir_;
  mseg::testing::Subprocess process_;
  uint16_t tcp_port_ = 0;
  uint16_t tls_port_ = 0;
};

}  // namespace mseg::collector::testing
