// Notices when a file is replaced or rewritten, the way editors, configuration management
// (which writes a temporary file and renames it) and `cp` change a policy file.
#pragma once

#include <string>

#include "mseg/result.hpp"

namespace mseg::agent {

class FileWatcher {
public:
  FileWatcher() = default;
  ~FileWatcher();
  FileWatcher(const FileWatcher&) = delete;
  FileWatcher& operator=(const FileWatcher&) = delete;

  // Watches the directory of `path` for that file name being closed after writing or moved in.
  Status start(const std::string& path);

  int fd() const { return fd_; }

  // Reads pending events; true when the watched file changed. Call when fd() is readable.
  bool changed();

private:
  int fd_ = -1;
  std::string name_;
};

}  // namespace mseg::agent
