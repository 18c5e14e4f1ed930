// Writing files so that a crash, a full disk or a failing device never leaves a reader a
// truncated or half-written file: the helpers the agent and the collector share.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <string_view>

#include "mseg/result.hpp"

namespace mseg {

// Writes all of `data`, retrying short writes and EINTR; fails with write()'s errno (ENOSPC
// on a full file system).
Status writeAll(int fd, std::string_view data);

// The whole content of the file at `path`; the error keeps open()'s errno (ENOENT...).
Result<std::string> readWholeFile(const std::filesystem::path& path);

// Makes a rename or a new file in `dir` durable: fsync on the directory itself.
Status syncDirectory(const std::filesystem::path& dir);

// Replaces the file at `path` with `text`, atomically: a reader sees the old content or the
// new, never a mix or an empty file. Writes `path` + ".tmp" with `mode`, flushes it to the
// device, renames it over `path` and syncs the directory. Every step is checked; on a failure
// (ENOSPC when the file system is full) the old file stays as it was, the temporary file is
// removed, and the error names the step and the file. One writer per path at a time.
Status replaceFile(const std::filesystem::path& path, std::string_view text, mode_t mode);

}  // namespace mseg
