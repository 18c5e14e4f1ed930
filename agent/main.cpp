// microsegd: the microseg enforcement agent. See `microsegd --help` and docs/.
#include <cstdio>

#include "agent.hpp"
#include "config.hpp"
#include "logging.hpp"
#include "service_notify.hpp"

#ifndef MSEG_VERSION
#define MSEG_VERSION "unknown"
#endif

namespace {

// Before main() and this program's own static initialisers: configuration management may send
// SIGHUP the moment the agent is started, and its default action would end the agent.
// LIMITATION: the dynamic loader and the shared libraries' initialisers run earlier, about
// 10 ms on a 2-core VM, and a SIGHUP then still ends the agent (exit 129). Under systemd a
// reload waits until the agent reported READY=1.
__attribute__((constructor(101))) void blockAgentSignalsFirst() {
  mseg::agent::blockAgentSignals();
}

}  // namespace

int main(int argc, char** argv) {
  auto command = mseg::agent::parseCommandLine(argc, argv);
  if (!command) {
    std::fprintf(stderr, "microsegd: %s\n", command.error().message().c_str());
    return 2;
  }
  if (command->show_help) {
    std::fputs(mseg::agent::usageText(), stdout);
    return 0;
  }
  if (command->show_version) {
    std::printf("microsegd %s\n", MSEG_VERSION);
    return 0;
  }

  mseg::agent::setUpLogging(command->config.log_level);
  auto log = mseg::agent::logger("agent");
  log->info("starting version={} policy={}", MSEG_VERSION, command->config.policy_path);
  auto agent = mseg::agent::Agent::start(command->config);
  if (!agent) {
    log->critical("cannot start: {}", agent.error().message());
    mseg::agent::ServiceNotifier().failed("cannot start: " + agent.error().message(),
                                          agent.error().code());
    return 1;
  }
  return (*agent)->run();
}
