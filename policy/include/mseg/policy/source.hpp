// Where a policy comes from: one file, or a directory of files merged in name order. A
// PolicySource remembers what it parsed, so a reload reads and parses only the files that
// changed; the unchanged ones come back as the same shared PolicyFile.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mseg/policy/diagnostics.hpp"
#include "mseg/policy/policy.hpp"
#include "mseg/result.hpp"

namespace mseg::policy {

// Where the time of loading a policy went, for the agent's reload log and the benchmarks.
struct LoadTimes {
  std::chrono::nanoseconds read{};     // listing the directory, stat and reading changed files
  std::chrono::nanoseconds parse{};    // hashing, YAML, validation and the merge
  std::chrono::nanoseconds compile{};  // selectors to verdict entries
};

// What the last load of a PolicySource did, for tests and the reload log.
struct LoadStats {
  size_t files = 0;   // policy files the source consists of
  size_t read = 0;    // of them, read from disk: new, or their stat changed
  size_t parsed = 0;  // of them, parsed: new, or their content changed
};

// What stat says about a file; a file whose identity is unchanged is taken as unchanged.
struct FileIdentity {
  dev_t device = 0;
  ino_t inode = 0;
  off_t size = 0;
  int64_t mtime_ns = 0;
  int64_t ctime_ns = 0;

  bool operator==(const FileIdentity&) const = default;
};

// How recent a change must be for its stat to be distrusted: a file rewritten twice within one
// timestamp tick (a few ms on Linux) with the same size has the same stat both times.
inline constexpr std::chrono::nanoseconds kDefaultRacyWindow = std::chrono::milliseconds(100);

// A policy path: a regular file (read as one policy text, as parsePolicy does) or a directory
// whose policy files are every regular file (or symlink to one) directly in it named *.yaml or
// *.yml and not starting with `.`, taken in byte order of their names; other names (editor
// backups, swap files, a README) are ignored. Each policy file is a complete document
// (`version: 1`, any of workloads, inventory, segments); mergePolicyFiles joins them.
//
// Not thread-safe: one caller loads at a time. Parsing itself runs on several threads.
class PolicySource {
public:
  explicit PolicySource(std::string path,
                        std::chrono::nanoseconds racy_window = kDefaultRacyWindow);

  const std::string& path() const { return path_; }

  // Loads the policy as it is on disk now. Files whose stat is unchanged since the last load
  // are neither read nor parsed, a file read again with the same SHA-256 is not parsed, and
  // several files to parse are parsed in parallel. Problems go to `out` naming the file; a
  // file that fails is not remembered, so the next load tries it again. Fails with the errno
  // of a path that cannot be read, or EINVAL ("<path>: N errors") after reporting to `out`.
  // `times`, if given, gets read and parse; compile is the caller's.
  Result<Policy> load(Diagnostics& out, LoadTimes* times = nullptr);

  const LoadStats& lastLoad() const { return stats_; }

private:
  // A file parsed without errors, and the stat it had when read.
  struct Known {
    FileIdentity identity;
    bool trust_identity = false;  // false: it changed too recently for its stat to tell
    std::shared_ptr<const PolicyFile> file;
  };
  struct Pending;

  Result<Policy> loadFile(Diagnostics& out, LoadTimes& times);
  Result<Policy> loadDirectory(Diagnostics& out, LoadTimes& times);
  // Whether a file's stat, taken at wall clock `now_ns`, will tell a later change from it.
  bool isSettled(const FileIdentity& identity, int64_t now_ns) const;
  void parsePending(std::vector<Pending>& pending);
  Result<Policy> merge(const std::vector<std::shared_ptr<const PolicyFile>>& files,
                       Diagnostics& out);

  std::string path_;
  std::chrono::nanoseconds racy_window_;
  std::map<std::string, Known> known_;  // by name in the directory ("" for a file source)
  std::vector<std::shared_ptr<const PolicyFile>> last_files_;  // of the last successful load
  LoadStats stats_;
};

// Whether a directory entry of this name is a policy file: *.yaml or *.yml, not hidden.
bool isPolicyFileName(std::string_view name);

// The names of the policy files in `directory`, in load order. Fails with the errno of a
// directory that cannot be listed, or EINVAL when it holds no policy file (an empty policy
// would drop every rule) or too many.
Result<std::vector<std::string>> listPolicyDirectory(const std::string& directory);

// The text of a policy file, refusing what is not a regular file (without blocking on a FIFO)
// and files over the size limit. Fails with the errno, the message naming `path`.
Result<std::string> readPolicyText(const std::string& path);

// How a file of a policy directory is named in diagnostics: "directory/name".
std::string policyDirectoryPath(const std::string& directory, const std::string& name);

// A policy directory's files given as (name, text) in load order, parsed and merged like
// PolicySource loads a directory, content hash included; for a directory read elsewhere (the
// agent diffs one microsegctl sent). Fails (EINVAL, "<directory>: N errors") after reporting.
Result<Policy> parsePolicyDirectoryTexts(
    const std::string& directory, const std::vector<std::pair<std::string, std::string>>& files,
    Diagnostics& out);

// The content hash of a policy directory: hex SHA-256 of a manifest with one line
// "<hex SHA-256 of the file>  <name>\n" per policy file in load order, which is what
// `sha256sum` prints for the files (see docs/policy.md for the command).
std::string policyDirectoryHash(const std::vector<std::shared_ptr<const PolicyFile>>& files,
                                const std::vector<std::string>& names);

}  // namespace mseg::policy
