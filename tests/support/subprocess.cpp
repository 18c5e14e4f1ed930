#include "support/subprocess.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <utility>

#include "support/poll.hpp"

namespace mseg::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

// What a child reports through its status pipe when it cannot become what was asked of it. The
// pipe is close-on-exec, so a successful exec (or the start of `fn`) reads as end of file.
enum class ChildStep : int { kRedirect = 1, kJoinCgroup, kEnterNetns, kExec };

struct ChildFailure {
  ChildStep step;
  int err;
};

const char* describe(ChildStep step) {
  switch (step) {
    case ChildStep::kRedirect:
      return "redirect stdio";
    case ChildStep::kJoinCgroup:
      return "join cgroup";
    case ChildStep::kEnterNetns:
      return "enter network namespace";
    case ChildStep::kExec:
      return "exec";
  }
  return "start";
}

Result<std::array<UniqueFd, 2>> makePipe() {
  std::array<int, 2> fds{};
  if (pipe2(fds.data(), O_CLOEXEC) != 0) {
    return Error::fromErrno(errno, "pipe2");
  }
  return std::array<UniqueFd, 2>{UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// Only async-signal-safe calls from here to exec: the child of a fork may not allocate.
[[noreturn]] void failChild(int status_fd, ChildStep step) {
  ChildFailure failure{step, errno};
  (void)!write(status_fd, &failure, sizeof(failure));
  _exit(127);
}

struct ChildPlan {
  pid_t parent = -1;
  int out_fd = -1;
  int err_fd = -1;
  int status_fd = -1;
  std::string cgroup_procs;  // empty: stay
  std::string netns;         // empty: stay
  std::vector<char*> argv;   // empty: run fn instead
  const std::function<int()>* fn = nullptr;
};

[[noreturn]] void runChild(const ChildPlan& plan) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != plan.parent) {
    _exit(127);
  }

  int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0 || dup2(null_fd, STDIN_FILENO) < 0 || dup2(plan.out_fd, STDOUT_FILENO) < 0 ||
      dup2(plan.err_fd, STDERR_FILENO) < 0) {
    failChild(plan.status_fd, ChildStep::kRedirect);
  }

  if (!plan.cgroup_procs.empty()) {
    int fd = open(plan.cgroup_procs.c_str(), O_WRONLY | O_CLOEXEC);
    // "0" means the writing process itself.
    if (fd < 0 || write(fd, "0", 1) != 1) {
      failChild(plan.status_fd, ChildStep::kJoinCgroup);
    }
    close(fd);
  }

  if (!plan.netns.empty()) {
    int fd = open(plan.netns.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
      failChild(plan.status_fd, ChildStep::kEnterNetns);
    }
    close(fd);
  }

  if (plan.fn != nullptr) {
    close(plan.status_fd);
    int code = (*plan.fn)();
    std::fflush(nullptr);
    _exit(code & 0xff);
  }
  execvp(plan.argv[0], plan.argv.data());
  failChild(plan.status_fd, ChildStep::kExec);
}

int decodeStatus(int status) {
  if (WIFSIGNALED(status)) {
    return 128 + WTERMSIG(status);
  }
  return WEXITSTATUS(status);
}

}  // namespace

Result<Subprocess> Subprocess::start(const std::vector<std::string>& argv, const Placement& where) {
  if (argv.empty()) {
    return Error::invalid("start subprocess: empty argv");
  }
  return launch(where, &argv, nullptr);
}

Result<Subprocess> Subprocess::fork(const Placement& where, const std::function<int()>& fn) {
  return launch(where, nullptr, &fn);
}

Result<Subprocess> Subprocess::launch(const Placement& where, const std::vector<std::string>* argv,
                                      const std::function<int()>* fn) {
  auto out = makePipe();
  auto err = makePipe();
  auto status = makePipe();
  if (!out || !err || !status) {
    return (!out ? out.error() : !err ? err.error() : status.error()).wrap("start subprocess");
  }

  ChildPlan plan;
  plan.parent = getpid();
  plan.out_fd = (*out)[1].get();
  plan.err_fd = (*err)[1].get();
  plan.status_fd = (*status)[1].get();
  if (!where.cgroup.empty()) {
    plan.cgroup_procs = (where.cgroup / "cgroup.procs").string();
  }
  plan.netns = where.netns.string();
  if (argv != nullptr) {
    for (const auto& arg : *argv) {
      plan.argv.push_back(const_cast<char*>(arg.c_str()));
    }
    plan.argv.push_back(nullptr);
  }
  plan.fn = fn;
  std::string what = argv != nullptr ? "start " + argv->front() : std::string("fork child");

  // Unflushed stdio buffers would otherwise be written twice, once by the child.
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) {
    return Error::fromErrno(errno, what + ": fork");
  }
  if (pid == 0) {
    runChild(plan);
  }

  Subprocess child;
  child.pid_ = pid;
  child.out_fd_ = std::move((*out)[0]);
  child.err_fd_ = std::move((*err)[0]);
  fcntl(child.out_fd_.get(), F_SETFL, O_NONBLOCK);
  fcntl(child.err_fd_.get(), F_SETFL, O_NONBLOCK);
  (*out)[1].reset();
  (*err)[1].reset();
  (*status)[1].reset();

  ChildFailure failure{};
  ssize_t n = 0;
  do {
    n = read((*status)[0].get(), &failure, sizeof(failure));
  } while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof(failure))) {
    (void)child.wait(milliseconds(5000));
    return Error::fromErrno(failure.err, what + ": " + describe(failure.step));
  }
  return child;
}

Subprocess::Subprocess(Subprocess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      status_(std::exchange(other.status_, 0)),
      out_fd_(std::move(other.out_fd_)),
      err_fd_(std::move(other.err_fd_)),
      out_(std::move(other.out_)),
      err_(std::move(other.err_)) {}

Subprocess& Subprocess::operator=(Subprocess&& other) noexcept {
  if (this != &other) {
    kill();
    pid_ = std::exchange(other.pid_, -1);
    status_ = std::exchange(other.status_, 0);
    out_fd_ = std::move(other.out_fd_);
    err_fd_ = std::move(other.err_fd_);
    out_ = std::move(other.out_);
    err_ = std::move(other.err_);
  }
  return *this;
}

Subprocess::~Subprocess() { kill(); }

void Subprocess::kill() {
  if (pid_ <= 0 || status_.has_value()) {
    return;
  }
  ::kill(pid_, SIGKILL);
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  status_ = decodeStatus(status);
  readOutput(milliseconds(0));
}

// Reads whatever the child has written, waiting at most `timeout` for the first bytes (the whole
// `timeout` when both pipes are closed already). A pipe at end of file is closed.
void Subprocess::readOutput(milliseconds timeout) {
  // poll() ignores negative descriptors, so closed pipes drop out.
  std::array<pollfd, 2> fds{pollfd{out_fd_.get(), POLLIN, 0}, pollfd{err_fd_.get(), POLLIN, 0}};
  if (poll(fds.data(), fds.size(), static_cast<int>(timeout.count())) <= 0) {
    return;
  }
  std::array<std::pair<UniqueFd*, std::string*>, 2> sinks{std::pair{&out_fd_, &out_},
                                                          std::pair{&err_fd_, &err_}};
  for (auto [fd, text] : sinks) {
    char buffer[4096];
    while (*fd) {
      ssize_t n = read(fd->get(), buffer, sizeof(buffer));
      if (n > 0) {
        text->append(buffer, static_cast<size_t>(n));
        continue;
      }
      if (n == 0) {
        fd->reset();
      }
      break;  // EAGAIN: nothing more for now
    }
  }
}

Result<int> Subprocess::wait(milliseconds timeout) {
  if (status_.has_value()) {
    return *status_;
  }
  auto deadline = steady_clock::now() + timeout;
  int status = 0;
  bool exited = pollUntil(
      deadline,
      [&] {
        readOutput(milliseconds(5));
        pid_t reaped = waitpid(pid_, &status, WNOHANG);
        return reaped == pid_;
      },
      milliseconds(0));
  if (!exited) {
    return Error(ETIMEDOUT, "wait for pid " + std::to_string(pid_) + ": still running");
  }
  status_ = decodeStatus(status);
  // What the child wrote before it exited is in the pipes now; a grandchild that keeps them
  // open does not hold us up.
  readOutput(milliseconds(0));
  return *status_;
}

Result<CommandResult> runCommand(const std::vector<std::string>& argv, milliseconds timeout,
                                 const Placement& where) {
  auto child = Subprocess::start(argv, where);
  if (!child) {
    return child.error();
  }
  auto status = child->wait(timeout);
  if (!status) {
    return status.error().wrap(argv.front());
  }
  return CommandResult{*status, child->out(), child->err()};
}

Status runChecked(const std::vector<std::string>& argv, milliseconds timeout) {
  auto result = runCommand(argv, timeout);
  if (!result) {
    return result.error();
  }
  if (result->status != 0) {
    std::string command;
    for (const auto& arg : argv) {
      command += (command.empty() ? "" : " ") + arg;
    }
    while (!result->err.empty() && result->err.back() == '\n') {
      result->err.pop_back();
    }
    return Error(ECHILD,
                 command + ": exit status " + std::to_string(result->status) + ": " + result->err);
  }
  return {};
}

Result<int> runIn(const Placement& where, const std::function<int()>& fn, milliseconds timeout) {
  auto child = Subprocess::fork(where, fn);
  if (!child) {
    return child.error();
  }
  return child->wait(timeout);
}

}  // namespace mseg::testing
