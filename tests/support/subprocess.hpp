// Child processes for privileged tests: placed in a test cgroup and network namespace before
// they run, with their output captured, waited for with a deadline and killed when dropped.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "mseg/result.hpp"
#include "support/unique_fd.hpp"

namespace mseg::testing {

// Where a child runs. An empty field leaves the child where the test process is.
struct Placement {
  std::filesystem::path netns;   // a network namespace file, e.g. /run/netns/mseg-t-1-2
  std::filesystem::path cgroup;  // a cgroup v2 directory; the child joins it before anything else
};

// A child process that this object owns: the destructor kills (SIGKILL) and reaps it if it still
// runs. The child also gets SIGKILL when the test process dies, so a crashed test leaves no
// servers behind. Fork-based: create from a single-threaded process. Not thread-safe.
class Subprocess {
public:
  // Starts argv (argv[0] is searched in PATH) in `where`, stdin from /dev/null, stdout and stderr
  // captured. Fails, naming the step, when the child cannot join the cgroup, enter the
  // namespace or exec.
  static Result<Subprocess> start(const std::vector<std::string>& argv,
                                  const Placement& where = {});

  // Forks a child that enters `where`, runs `fn` and exits with its return value (0 to 255;
  // errno values fit). The child shares the test's memory image as of the fork; what `fn` writes
  // to stdout and stderr is captured. Fails when the child cannot be placed.
  static Result<Subprocess> fork(const Placement& where, const std::function<int()>& fn);

  Subprocess(Subprocess&& other) noexcept;
  Subprocess& operator=(Subprocess&& other) noexcept;
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;
  ~Subprocess();

  // The child's pid; still valid after it exited (then no longer a process).
  pid_t pid() const { return pid_; }

  // Whether the child has not been reaped yet.
  bool running() const { return !status_.has_value(); }

  // Waits up to `timeout` for the child to exit while collecting its output. Returns its exit
  // status, or 128 + the signal number when a signal ended it; ETIMEDOUT when it still runs (it
  // is left running). After an exit, returns the same status again.
  Result<int> wait(std::chrono::milliseconds timeout);

  // Sends SIGKILL and reaps the child; nothing when it was already reaped.
  void kill();

  // What the child wrote so far (complete once wait() returned a status).
  const std::string& out() const { return out_; }
  const std::string& err() const { return err_; }

private:
  Subprocess() = default;
  static Result<Subprocess> launch(const Placement& where, const std::vector<std::string>* argv,
                                   const std::function<int()>* fn);
  void readOutput(std::chrono::milliseconds timeout);

  pid_t pid_ = -1;
  std::optional<int> status_;
  UniqueFd out_fd_;
  UniqueFd err_fd_;
  std::string out_;
  std::string err_;
};

// Runs argv to completion in `where` within `timeout`.
struct CommandResult {
  int status = 0;  // as Subprocess::wait returns it
  std::string out;
  std::string err;
};
Result<CommandResult> runCommand(const std::vector<std::string>& argv,
                                 std::chrono::milliseconds timeout = std::chrono::seconds(10),
                                 const Placement& where = {});

// runCommand that also fails, quoting the command and its stderr, when it exits non-zero.
Status runChecked(const std::vector<std::string>& argv,
                  std::chrono::milliseconds timeout = std::chrono::seconds(10));

// Runs `fn` in a child placed in `where` and returns its exit status (see Subprocess::fork);
// ETIMEDOUT when it runs longer than `timeout` (the child is then killed).
Result<int> runIn(const Placement& where, const std::function<int()>& fn,
                  std::chrono::milliseconds timeout = std::chrono::seconds(30));

}  // namespace mseg::testing
