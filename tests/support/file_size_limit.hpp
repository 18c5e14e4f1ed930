// A full disk for unit tests, without root or a small file system: while a FileSizeLimit
// lives, this process cannot make a file longer than `bytes` (RLIMIT_FSIZE); a write past it
// fails with EFBIG, as one on a full disk fails with ENOSPC, possibly after a short write.
#pragma once

#include <signal.h>
#include <sys/resource.h>

namespace mseg::testing {

class FileSizeLimit {
public:
  explicit FileSizeLimit(rlim_t bytes) {
    // The kernel signals SIGXFSZ besides failing the write; its default action ends the process.
    previous_handler_ = signal(SIGXFSZ, SIG_IGN);
    getrlimit(RLIMIT_FSIZE, &previous_);
    rlimit limited = previous_;
    limited.rlim_cur = bytes;
    setrlimit(RLIMIT_FSIZE, &limited);
  }
  ~FileSizeLimit() {
    setrlimit(RLIMIT_FSIZE, &previous_);
    signal(SIGXFSZ, previous_handler_);
  }
  FileSizeLimit(const FileSizeLimit&) = delete;
  FileSizeLimit& operator=(const FileSizeLimit&) = delete;

private:
  rlimit previous_{};
  sighandler_t previous_handler_ = SIG_DFL;
};

}  // namespace mseg::testing
