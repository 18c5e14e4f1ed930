#include "mseg/collector/sequence_store.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>

#include <optional>
#include <sstream>

#include "file_util.hpp"
#include "mseg/collector/identity.hpp"
#include "mseg/policy/yaml_tree.hpp"

namespace mseg::collector {
namespace {

constexpr std::string_view kHeader = "# microseg-collector agent state v1";

bool isPlainNameByte(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

// Parses "key value" lines; unknown keys are skipped so that a later version may add some.
Result<AgentMark> parseState(const std::string& text, const std::string& path) {
  AgentMark mark;
  bool has_sequence = false;
  std::istringstream lines(text);
  std::string line;
  for (int number = 1; std::getline(lines, line); ++number) {
    auto space = line.find(' ');
    std::string_view key = std::string_view(line).substr(0, space);
    if (key != "sequence" && key != "dropped_total") {
      continue;
    }
    std::string_view rest =
        space == std::string::npos ? std::string_view() : std::string_view(line).substr(space + 1);
    uint64_t value = 0;
    if (auto parsed = policy::parseDecimal(rest)) {
      value = *parsed;
    } else {
      return Error(EBADMSG, fmt::format("{}:{}: malformed `{}` line", path, number, key));
    }
    if (key == "sequence") {
      mark.sequence = value;
      has_sequence = true;
    } else {
      mark.dropped_total = value;
    }
  }
  if (!has_sequence) {
    return Error(EBADMSG, fmt::format("{}: no `sequence` line", path));
  }
  return mark;
}

}  // namespace

Result<SequenceStore> SequenceStore::open(std::filesystem::path dir) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) {
    return Error::fromErrno(error.value(), "create state directory " + dir.string());
  }
  ::chmod(dir.c_str(), 0700);
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    return Error::fromErrno(errno, "state directory " + dir.string());
  }
  return SequenceStore(std::move(dir));
}

std::filesystem::path SequenceStore::pathFor(std::string_view agent_id) const {
  std::string name = "agent-";
  for (unsigned char c : canonicalHostName(agent_id)) {
    if (isPlainNameByte(c)) {
      name += static_cast<char>(c);
    } else {
      name += fmt::format("%{:02X}", c);
    }
  }
  return dir_ / (name + ".state");
}

Result<AgentMark> SequenceStore::load(std::string_view agent_id) const {
  auto path = pathFor(agent_id);
  auto text = readWholeFile(path);
  if (!text) {
    if (text.error().code() == ENOENT) {
      return AgentMark{};
    }
    return text.error().wrap("agent state");
  }
  return parseState(*text, path.string());
}

Status SequenceStore::save(std::string_view agent_id, const AgentMark& mark) const {
  std::string text = fmt::format("{}\nsequence {}\ndropped_total {}\n", kHeader, mark.sequence,
                                 mark.dropped_total);
  return replaceFile(pathFor(agent_id), text, 0600);
}

}  // namespace mseg::collector
