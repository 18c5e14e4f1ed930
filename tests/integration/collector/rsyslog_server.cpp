#include "rsyslog_server.hpp"

#include <fmt/format.h>

#include <fstream>
#include <sstream>

#include "mseg/policy/yaml_tree.hpp"
#include "support/poll.hpp"
#include "support/sockets.hpp"

namespace mseg::collector::testing {
namespace {

constexpr const char* kRsyslogd = "/usr/sbin/rsyslogd";

// Fields joined by '|': rsyslog's own parse of each RFC 5424 message. MSG goes last since CEF
// text contains '|' itself.
constexpr const char* kConfig = R"(global(workDirectory="{dir}/work"
       defaultNetstreamDriverCAFile="{ca}"
       defaultNetstreamDriverCertFile="{cert}"
       defaultNetstreamDriverKeyFile="{key}")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{tcp_port}" listenPortFileName="{dir}/tcp.port"
      ruleset="tcp")
input(type="imtcp" address="127.0.0.1" port="{tls_port}" listenPortFileName="{dir}/tls.port"
      ruleset="tls" streamDriver.name="gtls" streamDriver.mode="1"
      streamDriver.authMode="anon")
template(name="fields" type="string" string="%hostname%|%app-name%|%msgid%|%msg%\n")
ruleset(name="tcp") {{ action(type="omfile" file="{dir}/tcp.log" template="fields") }}
ruleset(name="tls") {{ action(type="omfile" file="{dir}/tls.log" template="fields") }}
)";

std::optional<uint16_t> readPort(const std::filesystem::path& path) {
  std::ifstream file(path);
  std::string text;
  std::getline(file, text);
  auto port = policy::parseDecimal(text);
  if (!port || *port == 0 || *port > 65535) {
    return std::nullopt;
  }
  return static_cast<uint16_t>(*port);
}

}  // namespace

Result<RsyslogServer> RsyslogServer::start(const std::filesystem::path& dir,
                                           const std::filesystem::path& ca,
                                           const std::filesystem::path& cert,
                                           const std::filesystem::path& key, uint16_t tcp_port,
                                           uint16_t tls_port) {
  std::filesystem::create_directories(dir / "work");
  std::filesystem::remove(dir / "tcp.port");
  std::filesystem::remove(dir / "tls.port");
  // A killed rsyslogd leaves its pid file behind.
  std::filesystem::remove(dir / "rsyslogd.pid");
  {
    std::ofstream config(dir / "rsyslog.conf");
    config << fmt::format(kConfig, fmt::arg("dir", dir.string()), fmt::arg("ca", ca.string()),
                          fmt::arg("cert", cert.string()), fmt::arg("key", key.string()),
                          fmt::arg("tcp_port", tcp_port), fmt::arg("tls_port", tls_port));
  }

  auto process =
      mseg::testing::Subprocess::start({kRsyslogd, "-n", "-f", (dir / "rsyslog.conf").string(),
                                        "-i", (dir / "rsyslogd.pid").string()});
  if (!process) {
    return process.error();
  }
  RsyslogServer server(dir, std::move(*process));

  // rsyslog writes a port file only for port 0; a given port is ready once it accepts.
  auto ready = [&](uint16_t requested, const char* port_file) -> uint16_t {
    if (requested == 0) {
      return readPort(dir / port_file).value_or(0);
    }
    return mseg::testing::tcpConnect("127.0.0.1", requested, std::chrono::milliseconds(200)) == 0
               ? requested
               : 0;
  };
  bool listening = mseg::testing::pollUntil(std::chrono::seconds(10), [&] {
    server.tcp_port_ = ready(tcp_port, "tcp.port");
    server.tls_port_ = ready(tls_port, "tls.port");
    return (server.tcp_port_ != 0 && server.tls_port_ != 0) ||
           server.process_.wait(std::chrono::milliseconds(0)).ok();
  });
  if (!listening || server.tcp_port_ == 0 || server.tls_port_ == 0) {
    server.process_.kill();
    (void)server.process_.wait(std::chrono::seconds(1));
    return Error(ETIMEDOUT, "rsyslogd did not listen: " + server.process_.err());
  }
  return server;
}

std::vector<ReceivedMessage> RsyslogServer::read(const std::string& file) const {
  std::ifstream log(dir_ / file);
  std::vector<ReceivedMessage> messages;
  for (std::string line; std::getline(log, line);) {
    std::istringstream fields(line);
    ReceivedMessage message;
    std::getline(fields, message.hostname, '|');
    std::getline(fields, message.app_name, '|');
    std::getline(fields, message.msgid, '|');
    std::getline(fields, message.msg);
    messages.push_back(std::move(message));
  }
  return messages;
}

bool RsyslogServer::waitForTcp(size_t count, std::chrono::milliseconds timeout) const {
  return mseg::testing::pollUntil(timeout, [&] { return receivedOverTcp().size() >= count; });
}

bool RsyslogServer::waitForTls(size_t count, std::chrono::milliseconds timeout) const {
  return mseg::testing::pollUntil(timeout, [&] { return receivedOverTls().size() >= count; });
}

}  // namespace mseg::collector::testing
