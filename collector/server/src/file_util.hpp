// File descriptor helpers shared by the state store and the file outputs.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>
#include <string_view>
#include <utility>

#include "mseg/result.hpp"
#include "mseg/unique_fd.hpp"

namespace mseg::collector {

// An owned descriptor, closed on destruction.
using FileDescriptor = mseg::UniqueFd;

// Writes all of `data`, retrying short writes and EINTR.
Status writeAll(int fd, std::string_view data);

// The whole content of the file at `path`; the error keeps open()'s errno (ENOENT...).
Result<std::string> readWholeFile(const std::filesystem::path& path);

// Makes a rename or a new file in `dir` durable: fsync on the directory itself.
Status syncDirectory(const std::filesystem::path& dir);

}  // namespace mseg::collector
