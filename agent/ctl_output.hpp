// What microsegctl prints: tables for people and JSON for scripts. JSON is the control
// protocol's messages with their field names, 64-bit numbers as numbers, enums as the words
// the tables use and addresses as text, so its keys follow the .proto's compatibility rules.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <google/protobuf/message.h>
#include <nlohmann/json.hpp>

#include "ctl_client.hpp"

namespace mseg::ctl {

// `text` made safe to print on a terminal: every byte of a control character (C0 such as ESC
// and CR, DEL, C1), of invalid UTF-8, or of an invisible formatting character (zero-width
// characters, bidirectional overrides) becomes `\xHH`; everything else, UTF-8 letters
// included, is kept. A workload controls some of what microsegctl prints (its command name,
// its cgroup's name), and must not be able to move the cursor, recolour or clear the screen,
// or forge a line. With `keep_newlines`, newlines stay, for messages of several lines.
std::string printable(std::string_view text, bool keep_newlines = false);

// Rows of cells in columns for people, every cell made printable(): tables print nothing
// raw. Columns are padded to their widest cell, or to a fixed width where given (flows print
// line by line and cannot know the widest), two spaces apart; the last column is not padded.
class Table {
public:
  Table() = default;  // without a header row
  explicit Table(std::vector<std::string> header) { add(std::move(header)); }

  void add(std::vector<std::string> row);
  size_t rows() const { return rows_.size(); }
  // `min_widths[i]`, when given, is the least width of column i.
  std::string render(const std::vector<size_t>& min_widths = {}) const;

private:
  std::vector<std::vector<std::string>> rows_;
};

nlohmann::ordered_json toJson(const google::protobuf::Message& message);

std::string renderStatus(const cv1::AgentStatus& status);
std::string renderDiff(const cv1::PolicyDiff& diff, const std::string& file);
std::string renderTrace(const cv1::Trace& trace);
std::string renderWorkloads(const cv1::WorkloadList& list);

// Flows print as a header once, then one line per record.
std::string flowHeader();
std::string renderFlow(const FlowRecord& record);

// "198.18.0.10" from 4 bytes, "fd00::10" from 16; hex for anything else.
std::string addressText(const std::string& bytes);

}  // namespace mseg::ctl
