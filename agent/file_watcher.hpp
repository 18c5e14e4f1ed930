// Notices when the policy changes on disk, the way editors, configuration management (which
// writes a temporary file and renames it), `cp` and deployments by symlink change it.
#pragma once

#include <sys/inotify.h>

#include <cstdint>
#include <map>
#include <set>
#include <string>

#include "mseg/result.hpp"

namespace mseg::agent {

class FileWatcher {
public:
  FileWatcher() = default;
  ~FileWatcher();
  FileWatcher(const FileWatcher&) = delete;
  FileWatcher& operator=(const FileWatcher&) = delete;

  // Watches the policy at `path`. A file: the file name closed after writing or moved in (the
  // directory is watched, not the file: a rename over the file replaces the inode a file watch
  // holds). A directory: besides, any policy file in it (mseg/policy/source.hpp) created,
  // written, moved in or out, or deleted. A symlink, as the path or as a policy file in the
  // directory: the link (replaced, or pointed elsewhere) and its target.
  Status start(const std::string& path);

  int fd() const { return fd_; }

  // Reads pending events; true when the policy may have changed. A removal is reported only
  // after kQuietPeriod without a new version of the file arriving, so that an editor's save
  // (move the old file away, write the new one) is one change, not a policy without that file
  // followed by one with it. Watches follow links pointed elsewhere. Call when fd() is readable.
  bool changed();

  // Whether the policy path went away (deleted, or a link in its chain removed) and nothing has
  // replaced it yet. The agent keeps enforcing the last version it applied; changed() warns once
  // when it notices.
  bool policyGone() const { return policy_gone_; }

private:
  // What one watched directory is watched for.
  struct Watch {
    std::set<std::string> names;  // these entries
    bool policy_files = false;    // and every policy file name
  };
  // Ordered by what a batch of events amounts to: a new version of a file outweighs a removal.
  // Gone: a name of a single policy file's path removed, which reloads nothing.
  enum class Event : uint8_t { None, Gone, Removal, Content };

  Status arm();
  void watchLinkChain(std::string path, std::map<std::string, Watch>& wanted) const;
  Event classify(const inotify_event& event) const;
  Event readEvents();
  void warnIfPolicyGone();

  int fd_ = -1;
  std::string path_;                        // absolute, links not resolved
  std::map<int, Watch> watches_;            // by watch descriptor
  std::map<int, std::string> directories_;  // by watch descriptor, for lstat of created names
  bool policy_gone_ = false;
};

}  // namespace mseg::agent
