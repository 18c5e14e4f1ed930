// Loading a policy file or directory, reading and parsing only what changed since the last
// load. See mseg/policy/source.hpp for the rules of a policy directory.
#include "mseg/policy/source.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <set>
#include <system_error>
#include <thread>

#include "policy_file.hpp"

namespace mseg::policy {
namespace {

using Clock = std::chrono::steady_clock;

// Far above any real policy (100,000 rules take 12 MB), far below what would exhaust memory;
// for a directory, the sum of its files.
constexpr size_t kMaxPolicyBytes = size_t{256} << 20;
// Far above a sensible layout (a file per application or team), low enough that listing and
// stat-ing the directory stays a small part of a reload.
constexpr size_t kMaxPolicyFiles = 10000;

FileIdentity identityOf(const struct stat& info) {
  auto ns = [](const timespec& t) { return int64_t{t.tv_sec} * 1000000000 + t.tv_nsec; };
  return {info.st_dev, info.st_ino, info.st_size, ns(info.st_mtim), ns(info.st_ctim)};
}

int64_t wallClockNs() {
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  return int64_t{now.tv_sec} * 1000000000 + now.tv_nsec;
}

struct FileText {
  std::string text;
  FileIdentity identity;  // taken before reading: a change while reading shows as a new stat
};

Result<FileText> readPolicyFile(const std::string& path) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below.
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    return Error::fromErrno(errno, fmt::format("open {}", path));
  }

  FileText file;
  struct stat info {};
  if (fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    close(fd);
    return Error(EINVAL, fmt::format("{} is not a regular file or a directory (a device or pipe); "
                                     "give the path of a policy file or directory",
                                     path));
  }
  if (static_cast<uint64_t>(info.st_size) > kMaxPolicyBytes) {
    close(fd);
    return Error(EFBIG, fmt::format("{} is {} bytes; a policy may have at most {} MiB", path,
                                    info.st_size, kMaxPolicyBytes >> 20));
  }
  file.identity = identityOf(info);
  file.text.reserve(static_cast<size_t>(info.st_size));
  char buffer[1 << 16];
  while (true) {
    ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      int err = errno;
      close(fd);
      return Error::fromErrno(err, fmt::format("read {}", path));
    }
    if (n == 0) {
      break;
    }
    file.text.append(buffer, static_cast<size_t>(n));
    if (file.text.size() > kMaxPolicyBytes) {  // the file grew while we read it
      close(fd);
      return Error(
          EFBIG, fmt::format("{} grew past {} MiB while being read", path, kMaxPolicyBytes >> 20));
    }
  }
  close(fd);
  return file;
}

bool endsWith(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

std::string joinPath(const std::string& directory, const std::string& name) {
  if (!directory.empty() && directory.back() == '/') {
    return directory + name;
  }
  return directory + "/" + name;
}

}  // namespace

// Hidden files (`.x.yaml.swp`) and other suffixes (`x.yaml~`, `x.yaml.orig`, README) are
// what editors and people leave beside policy files; only these names are policy.
bool isPolicyFileName(std::string_view name) {
  if (name.empty() || name.front() == '.') {
    return false;
  }
  return endsWith(name, ".yaml") || endsWith(name, ".yml");
}

// A file that has to be looked at: read from disk, then hashed and parsed unless its content
// is what `known` holds.
struct PolicySource::Pending {
  size_t index = 0;  // in load order
  std::string name;  // in the directory; empty for a file source
  std::string path;  // as diagnostics name it
  FileText read;
  std::shared_ptr<const PolicyFile> known;  // the last good version, if any
  // Results of parsePending.
  std::shared_ptr<const PolicyFile> file;  // partial when errors > 0
  bool parsed = false;
  size_t errors = 0;
  Diagnostics diagnostics;  // one per file: Diagnostics is not thread-safe
};

PolicySource::PolicySource(std::string path, std::chrono::nanoseconds racy_window)
    : path_(std::move(path)), racy_window_(racy_window) {}

bool PolicySource::isSettled(const FileIdentity& identity, int64_t now_ns) const {
  return std::max(identity.mtime_ns, identity.ctime_ns) < now_ns - racy_window_.count();
}

Result<Policy> PolicySource::load(Diagnostics& out, LoadTimes* times) {
  LoadTimes local;
  LoadTimes& spent = times != nullptr ? *times : local;
  stats_ = {};
  struct stat info {};
  if (stat(path_.c_str(), &info) == 0 && S_ISDIR(info.st_mode)) {
    return loadDirectory(out, spent);
  }
  // Anything else, missing or a device included, fails in reading with the usual message.
  return loadFile(out, spent);
}

Result<Policy> PolicySource::loadFile(Diagnostics& out, LoadTimes& times) {
  auto start = Clock::now();
  const int64_t now = wallClockNs();
  size_t errors_before = out.errorCount();
  std::vector<Pending> pending(1);
  Pending& item = pending.front();
  item.path = path_;
  auto known = known_.find("");
  struct stat info {};
  bool unchanged = known != known_.end() && known->second.trust_identity &&
                   stat(path_.c_str(), &info) == 0 && identityOf(info) == known->second.identity;
  if (unchanged) {
    item.file = known->second.file;
  } else {
    auto text = readPolicyFile(path_);
    if (!text) {
      times.read = Clock::now() - start;
      return text.error().wrap("load policy");
    }
    item.read = std::move(*text);
    item.known = known != known_.end() ? known->second.file : nullptr;
  }
  auto parse_start = Clock::now();
  times.read = parse_start - start;

  if (!unchanged) {
    parsePending(pending);
    out.append(item.diagnostics);
    if (item.errors == 0) {
      known_[""] = {item.read.identity, isSettled(item.read.identity, now), item.file};
    }
    stats_.read = 1;
    stats_.parsed = item.parsed ? 1 : 0;
  }
  stats_.files = 1;
  // Merged even when the file has errors, as parsePolicy does, so that one round reports the
  // selector keys too.
  auto merged = merge({item.file}, out);
  times.parse = Clock::now() - parse_start;
  if (size_t errors = out.errorCount() - errors_before; errors > 0) {
    return Error::invalid(fmt::format("{}: {}", path_, countErrors(errors)));
  }
  merged->content_hash = item.file->content_hash;
  return merged;
}

Result<Policy> PolicySource::loadDirectory(Diagnostics& out, LoadTimes& times) {
  auto start = Clock::now();
  const int64_t now = wallClockNs();
  size_t errors_before = out.errorCount();
  auto names = listPolicyDirectory(path_);
  if (!names) {
    return names.error().wrap("load policy");
  }

  std::vector<std::shared_ptr<const PolicyFile>> files(names->size());
  std::vector<Pending> pending;
  uint64_t total_bytes = 0;
  for (size_t i = 0; i < names->size(); ++i) {
    const std::string& name = (*names)[i];
    const std::string path = joinPath(path_, name);
    struct stat info {};
    if (stat(path.c_str(), &info) != 0) {
      out.error(path, {}, fmt::format("cannot read this policy file: {}", std::strerror(errno)));
      continue;
    }
    if (!S_ISREG(info.st_mode)) {
      out.error(path, {},
                "not a regular file (a directory, device or pipe); a policy directory holds "
                "policy files, and every *.yaml or *.yml name in it is taken for one");
      continue;
    }
    total_bytes += static_cast<uint64_t>(info.st_size);
    auto known = known_.find(name);
    if (known != known_.end() && known->second.trust_identity &&
        known->second.identity == identityOf(info)) {
      files[i] = known->second.file;
      continue;
    }
    auto text = readPolicyFile(path);
    if (!text) {
      out.error(path, {}, text.error().message());
      continue;
    }
    Pending& item = pending.emplace_back();
    item.index = i;
    item.name = name;
    item.path = path;
    item.read = std::move(*text);
    item.known = known != known_.end() ? known->second.file : nullptr;
  }
  if (total_bytes > kMaxPolicyBytes) {
    out.error(path_, {},
              fmt::format("the policy files hold {} bytes together; a policy may have at most {} "
                          "MiB",
                          total_bytes, kMaxPolicyBytes >> 20));
  }
  auto parse_start = Clock::now();
  times.read = parse_start - start;

  parsePending(pending);
  for (Pending& item : pending) {
    out.append(item.diagnostics);
    if (item.errors == 0) {
      files[item.index] = item.file;
      known_[item.name] = {item.read.identity, isSettled(item.read.identity, now), item.file};
    }
    stats_.parsed += item.parsed ? 1 : 0;
  }
  std::set<std::string_view> present(names->begin(), names->end());
  std::erase_if(known_, [&](const auto& entry) { return present.count(entry.first) == 0; });
  stats_.files = names->size();
  stats_.read = pending.size();

  // Checks across files wait until every file is valid on its own: a file that failed to
  // parse would otherwise make every selector using its labels an error elsewhere.
  if (size_t errors = out.errorCount() - errors_before; errors > 0) {
    times.parse = Clock::now() - parse_start;
    return Error::invalid(fmt::format("{}: {}", path_, countErrors(errors)));
  }
  auto merged = merge(files, out);
  if (merged) {
    merged->content_hash = policyDirectoryHash(files, *names);
  }
  times.parse = Clock::now() - parse_start;
  return merged;
}

// Hashes every pending file and parses those whose content is new, largest first over as many
// threads as there are CPUs: libyaml is the bulk of a load, and files are independent.
void PolicySource::parsePending(std::vector<Pending>& pending) {
  std::vector<Pending*> order;
  for (Pending& item : pending) {
    order.push_back(&item);
  }
  std::sort(order.begin(), order.end(), [](const Pending* a, const Pending* b) {
    return a->read.text.size() > b->read.text.size();
  });

  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < order.size(); i = next++) {
      Pending& item = *order[i];
      std::string hash = sha256Hex(item.read.text);
      if (item.known != nullptr && item.known->content_hash == hash) {
        item.file = item.known;
        continue;
      }
      ParsedFile parsed =
          parsePolicyFileText(item.read.text, item.path, std::move(hash), item.diagnostics);
      item.file = std::move(parsed.file);
      item.errors = parsed.errors;
      item.parsed = true;
      item.read.text = std::string();
    }
  };

  size_t thread_count =
      std::min<size_t>(order.size(), std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::thread> helpers;
  for (size_t i = 1; i < thread_count; ++i) {
    try {
      helpers.emplace_back(work);
    } catch (const std::system_error&) {
      break;  // no thread to be had: the calling thread does the rest
    }
  }
  work();
  for (auto& helper : helpers) {
    helper.join();
  }
}

Result<Policy> PolicySource::merge(const std::vector<std::shared_ptr<const PolicyFile>>& files,
                                   Diagnostics& out) {
  Policy previous;
  previous.files = last_files_;
  auto merged = mergePolicyFiles(files, path_, out, last_files_.empty() ? nullptr : &previous);
  if (merged) {
    last_files_ = merged->files;
  }
  return merged;
}

Result<std::vector<std::string>> listPolicyDirectory(const std::string& directory) {
  DIR* listing = opendir(directory.c_str());
  if (listing == nullptr) {
    return Error::fromErrno(errno, fmt::format("open {}", directory));
  }
  std::vector<std::string> names;
  errno = 0;
  while (const dirent* entry = readdir(listing)) {
    if (isPolicyFileName(entry->d_name)) {
      names.emplace_back(entry->d_name);
    }
  }
  int err = errno;
  closedir(listing);
  if (err != 0) {
    return Error::fromErrno(err, fmt::format("list {}", directory));
  }
  if (names.empty()) {
    return Error::invalid(fmt::format(
        "{} holds no policy file (*.yaml or *.yml); an empty policy would drop every rule, so it "
        "is refused: add the policy files, or point the policy path at a file",
        directory));
  }
  if (names.size() > kMaxPolicyFiles) {
    return Error::invalid(fmt::format("{} holds {} policy files; at most {} are supported",
                                      directory, names.size(), kMaxPolicyFiles));
  }
  // std::string compares as unsigned bytes: the order of `LC_ALL=C ls`.
  std::sort(names.begin(), names.end());
  return names;
}

Result<std::string> readPolicyText(const std::string& path) {
  auto file = readPolicyFile(path);
  if (!file) {
    return file.error();
  }
  return std::move(file->text);
}

std::string policyDirectoryPath(const std::string& directory, const std::string& name) {
  return joinPath(directory, name);
}

Result<Policy> parsePolicyDirectoryTexts(
    const std::string& directory, const std::vector<std::pair<std::string, std::string>>& files,
    Diagnostics& out) {
  size_t errors_before = out.errorCount();
  std::vector<std::shared_ptr<const PolicyFile>> parsed;
  std::vector<std::string> names;
  for (const auto& [name, text] : files) {
    if (auto file = parsePolicyFile(text, joinPath(directory, name), out)) {
      parsed.push_back(*file);
      names.push_back(name);
    }
  }
  if (size_t errors = out.errorCount() - errors_before; errors > 0) {
    return Error::invalid(fmt::format("{}: {}", directory, countErrors(errors)));
  }
  auto merged = mergePolicyFiles(parsed, directory, out);
  if (merged) {
    merged->content_hash = policyDirectoryHash(parsed, names);
  }
  return merged;
}

std::string policyDirectoryHash(const std::vector<std::shared_ptr<const PolicyFile>>& files,
                                const std::vector<std::string>& names) {
  std::string manifest;
  for (size_t i = 0; i < files.size(); ++i) {
    manifest += files[i]->content_hash;
    manifest += "  ";
    manifest += names[i];
    manifest += '\n';
  }
  return sha256Hex(manifest);
}

}  // namespace mseg::policy
