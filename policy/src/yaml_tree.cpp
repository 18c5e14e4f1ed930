#include "mseg/policy/yaml_tree.hpp"

#include <yaml.h>

#include <algorithm>
#include <cstring>
#include <unordered_set>

#include <fmt/format.h>

namespace mseg::policy {
namespace {

constexpr int kMaxNestingDepth = 64;

// Mappings this long get a hash set for the duplicate-key check; policy mappings are short and
// a linear scan over them is cheaper than hashing.
constexpr size_t kKeyIndexThreshold = 16;

Position positionOf(const yaml_mark_t& mark) {
  return {static_cast<uint32_t>(mark.line + 1), static_cast<uint32_t>(mark.column + 1)};
}

bool isNullScalar(std::string_view text) {
  return text.empty() || text == "~" || text == "null" || text == "Null" || text == "NULL";
}

// Reader errors (bad encoding) come with a byte offset instead of a mark.
Position positionOfOffset(std::string_view text, size_t offset) {
  Position position{1, 1};
  for (size_t i = 0; i < offset && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++position.line;
      position.column = 1;
    } else {
      ++position.column;
    }
  }
  return position;
}

}  // namespace

class YamlDocumentBuilder {
public:
  YamlDocumentBuilder(std::string_view source, Diagnostics& out) : reader_(source, out) {}

  Result<YamlDocument> build(std::string_view text) {
    yaml_parser_t parser;
    if (yaml_parser_initialize(&parser) == 0) {
      return Error(ENOMEM, "initialize the YAML parser");
    }
    yaml_parser_set_input_string(&parser, reinterpret_cast<const unsigned char*>(text.data()),
                                 text.size());
    // Policies run at about 7 bytes of text per node; reserving for that spares the copies of
    // a vector doubling to millions of nodes, and pages never written cost no memory. The cap
    // (300 MB of address space) keeps a huge text from failing here under strict overcommit.
    doc_.nodes_.reserve(std::min(text.size() / 6, kMaxReservedNodes));

    bool done = false;
    bool failed = false;
    while (!done) {
      yaml_event_t event;
      if (yaml_parser_parse(&parser, &event) == 0) {
        reportSyntaxError(parser, text);
        failed = true;
        break;
      }
      done = handle(event);
      yaml_event_delete(&event);
    }
    yaml_parser_delete(&parser);

    if (failed) {
      return Error::invalid(fmt::format("{}: not valid YAML", reader_.source()));
    }
    finish();
    return std::move(doc_);
  }

private:
  // A node whose children are still found by index: doc_.nodes_ grows while parsing, so the
  // spans are only set once it is complete.
  struct Pending {
    YamlNode node;
    uint32_t first_child = 0;
    uint32_t child_count = 0;
  };

  struct Frame {
    Pending container;
    size_t scratch_begin = 0;  // its children so far are scratch_[scratch_begin..]
    bool has_key = false;
    bool drop_value = false;  // the pending key is a duplicate or not a string
    std::string_view key;
    Position key_position;
    std::unordered_set<std::string_view> key_index;  // once the mapping outgrows a scan
  };

  static constexpr size_t kTextBlockSize = 256 * 1024;
  static constexpr size_t kMaxReservedNodes = size_t{1} << 22;

  // Returns true when parsing should stop.
  bool handle(const yaml_event_t& event) {
    switch (event.type) {
      case YAML_DOCUMENT_START_EVENT:
        if (++documents_ > 1) {
          reader_.error(positionOf(event.start_mark),
                        "only one YAML document is allowed; remove this `---` and what follows");
          return true;
        }
        return false;
      case YAML_SCALAR_EVENT:
        attach(scalarNode(event));
        return false;
      case YAML_ALIAS_EVENT:
        reader_.error(positionOf(event.start_mark),
                      "YAML aliases (`*name`) are not supported; write the value out");
        attach({YamlNode{YamlKind::Null, true, positionOf(event.start_mark)}});
        return false;
      case YAML_SEQUENCE_START_EVENT:
      case YAML_MAPPING_START_EVENT:
        // libyaml's cost grows with the square of the nesting depth: a small file of nested
        // brackets would stall the agent for minutes. No policy or config nests this deep.
        if (++depth_ > kMaxNestingDepth) {
          reader_.error(positionOf(event.start_mark),
                        "nested deeper than " + std::to_string(kMaxNestingDepth) +
                            " levels; a policy never needs that many");
          return true;
        }
        open(event.type == YAML_SEQUENCE_START_EVENT ? YamlKind::Sequence : YamlKind::Mapping,
             event);
        return false;
      case YAML_SEQUENCE_END_EVENT:
      case YAML_MAPPING_END_EVENT:
        depth_ -= 1;
        close();
        return false;
      case YAML_STREAM_END_EVENT:
        return true;
      default:
        return false;
    }
  }

  Pending scalarNode(const yaml_event_t& event) {
    const auto& scalar = event.data.scalar;
    Pending pending;
    YamlNode& node = pending.node;
    node.position = positionOf(event.start_mark);
    node.plain = scalar.style == YAML_PLAIN_SCALAR_STYLE && scalar.plain_implicit != 0;
    node.text = storeText(reinterpret_cast<const char*>(scalar.value), scalar.length);
    node.kind = node.plain && isNullScalar(node.text) ? YamlKind::Null : YamlKind::Scalar;
    return pending;
  }

  std::string_view storeText(const char* data, size_t length) {
    if (length == 0) {
      return {};
    }
    if (length > kTextBlockSize / 4) {
      auto& block = doc_.text_blocks_.emplace_back(std::make_unique_for_overwrite<char[]>(length));
      std::memcpy(block.get(), data, length);
      return {block.get(), length};
    }
    if (length > block_left_) {
      auto& block =
          doc_.text_blocks_.emplace_back(std::make_unique_for_overwrite<char[]>(kTextBlockSize));
      block_next_ = block.get();
      block_left_ = kTextBlockSize;
    }
    std::memcpy(block_next_, data, length);
    std::string_view stored(block_next_, length);
    block_next_ += length;
    block_left_ -= length;
    return stored;
  }

  void open(YamlKind kind, const yaml_event_t& event) {
    Frame& frame = stack_.emplace_back();
    frame.container.node.kind = kind;
    frame.container.node.position = positionOf(event.start_mark);
    frame.scratch_begin = scratch_.size();
  }

  // Moves the finished container's children, now complete, to their final contiguous place.
  void close() {
    Frame& frame = stack_.back();
    Pending container = frame.container;
    container.first_child = static_cast<uint32_t>(doc_.nodes_.size());
    container.child_count = static_cast<uint32_t>(scratch_.size() - frame.scratch_begin);
    for (size_t i = frame.scratch_begin; i < scratch_.size(); ++i) {
      doc_.nodes_.push_back(scratch_[i].node);
      children_.push_back({scratch_[i].first_child, scratch_[i].child_count});
    }
    scratch_.resize(frame.scratch_begin);
    stack_.pop_back();
    attach(container);
  }

  void attach(Pending pending) {
    if (stack_.empty()) {
      root_ = pending;
      return;
    }

    Frame& top = stack_.back();
    if (top.container.node.kind == YamlKind::Sequence) {
      scratch_.push_back(pending);
      return;
    }
    if (!top.has_key) {
      acceptKey(top, pending.node);
      return;
    }
    if (!top.drop_value) {
      pending.node.key = top.key;
      pending.node.key_position = top.key_position;
      scratch_.push_back(pending);
    }
    top.has_key = false;
    top.drop_value = false;
  }

  void acceptKey(Frame& top, const YamlNode& key) {
    top.has_key = true;
    top.drop_value = false;
    top.key = key.text;
    top.key_position = key.position;
    if (key.kind == YamlKind::Sequence || key.kind == YamlKind::Mapping) {
      reader_.error(key.position,
                    "a mapping key must be a string, not " + std::string(key.kindName()));
      top.drop_value = true;
      return;
    }

    if (const YamlNode* first = findSibling(top)) {
      reader_.error(top.key_position,
                    fmt::format("duplicate key `{}`; it is first defined at {}:{}", top.key,
                                first->key_position.line, first->key_position.column));
      top.drop_value = true;
      return;
    }
    size_t count = scratch_.size() - top.scratch_begin;
    if (!top.key_index.empty()) {
      top.key_index.insert(top.key);
    } else if (count + 1 >= kKeyIndexThreshold) {
      for (size_t i = top.scratch_begin; i < scratch_.size(); ++i) {
        top.key_index.insert(scratch_[i].node.key);
      }
      top.key_index.insert(top.key);
    }
  }

  // The value already in the open mapping `top` under the pending key, if any.
  const YamlNode* findSibling(const Frame& top) const {
    if (!top.key_index.empty() && top.key_index.count(top.key) == 0) {
      return nullptr;
    }
    for (size_t i = top.scratch_begin; i < scratch_.size(); ++i) {
      if (scratch_[i].node.key == top.key) {
        return &scratch_[i].node;
      }
    }
    return nullptr;
  }

  void finish() {
    YamlNode* base = doc_.nodes_.data();
    for (size_t i = 0; i < doc_.nodes_.size(); ++i) {
      doc_.nodes_[i].children = {base + children_[i].first, children_[i].count};
    }
    doc_.root_ = root_.node;
    doc_.root_.children = {base + root_.first_child, root_.child_count};
    if (root_.node.position.line == 0) {
      doc_.root_.position = {1, 1};
    }
  }

  void reportSyntaxError(const yaml_parser_t& parser, std::string_view text) {
    std::string problem = parser.problem != nullptr ? parser.problem : "unknown problem";
    if (parser.error == YAML_READER_ERROR) {
      reader_.error(positionOfOffset(text, parser.problem_offset),
                    fmt::format("invalid YAML: {}", problem));
      return;
    }

    std::string message = fmt::format("invalid YAML: {}", problem);
    if (parser.context != nullptr) {
      Position context = positionOf(parser.context_mark);
      message += fmt::format(" ({} at {}:{})", parser.context, context.line, context.column);
    }
    reader_.error(positionOf(parser.problem_mark), std::move(message));
  }

  struct ChildRange {
    uint32_t first = 0;
    uint32_t count = 0;
  };

  YamlReader reader_;
  YamlDocument doc_;
  std::vector<Frame> stack_;
  std::vector<Pending> scratch_;      // children of the open containers, innermost last
  std::vector<ChildRange> children_;  // parallel to doc_.nodes_ until finish()
  Pending root_;
  char* block_next_ = nullptr;
  size_t block_left_ = 0;
  int documents_ = 0;
  int depth_ = 0;
};

namespace {

size_t editDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) {
    row[j] = j;
  }
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

}  // namespace

const YamlNode* YamlNode::find(std::string_view wanted) const {
  if (kind != YamlKind::Mapping) {
    return nullptr;
  }
  for (const auto& child : children) {
    if (child.key == wanted) {
      return &child;
    }
  }
  return nullptr;
}

std::string_view YamlNode::kindName() const {
  switch (kind) {
    case YamlKind::Null:
      return "nothing (null)";
    case YamlKind::Scalar:
      if (plain && parseDecimal(text)) {
        return "a number";
      }
      if (plain && (text == "true" || text == "false")) {
        return "a boolean";
      }
      return "a string";
    case YamlKind::Sequence:
      return "a list";
    case YamlKind::Mapping:
      return "a mapping";
  }
  return "a value";
}

Result<YamlDocument> parseYaml(std::string_view text, std::string_view source, Diagnostics& out) {
  return YamlDocumentBuilder(source, out).build(text);
}

void YamlReader::checkFields(const YamlNode& mapping, std::string_view what,
                             std::initializer_list<std::string_view> allowed) {
  for (const auto& child : mapping.children) {
    if (std::find(allowed.begin(), allowed.end(), child.key) != allowed.end()) {
      continue;
    }

    std::string message = fmt::format("unknown field `{}` in {}; allowed fields: {}", child.key,
                                      what, fmt::join(allowed, ", "));
    for (auto candidate : allowed) {
      if (editDistance(child.key, candidate) <= 2) {
        message += fmt::format(" (did you mean `{}`?)", candidate);
        break;
      }
    }
    error(child.key_position, std::move(message));
  }
}

const YamlNode* YamlReader::require(const YamlNode& mapping, std::string_view key,
                                    std::string_view what) {
  const YamlNode* value = mapping.find(key);
  if (value == nullptr) {
    error(mapping.position, fmt::format("{} is missing required field `{}`", what, key));
  }
  return value;
}

void YamlReader::reportWrongKind(const YamlNode& node, std::string_view field,
                                 std::string_view expected) {
  error(node.position,
        fmt::format("expected {} for `{}`, found {}", expected, field, node.kindName()));
}

bool YamlReader::expectMapping(const YamlNode& node, std::string_view field) {
  if (!node.isMapping()) {
    reportWrongKind(node, field, "a mapping");
    return false;
  }
  return true;
}

bool YamlReader::expectSequence(const YamlNode& node, std::string_view field) {
  if (!node.isSequence()) {
    reportWrongKind(node, field, "a list");
    return false;
  }
  return true;
}

std::optional<std::string> YamlReader::readString(const YamlNode& node, std::string_view field,
                                                  bool non_empty) {
  if (!node.isScalar()) {
    reportWrongKind(node, field, "a string");
    return std::nullopt;
  }
  if (non_empty && node.text.empty()) {
    error(node.position, fmt::format("`{}` must not be empty", field));
    return std::nullopt;
  }
  return std::string(node.text);
}

std::optional<uint64_t> YamlReader::readUnsigned(const YamlNode& node, std::string_view field,
                                                 uint64_t min, uint64_t max) {
  std::optional<uint64_t> value;
  if (node.isScalar() && node.plain) {
    value = parseDecimal(node.text);
  }
  // "-5" is a number to the reader, not the string kindName() would call it.
  const bool negative = node.isScalar() && node.plain && node.text.size() > 1 &&
                        node.text.front() == '-' && parseDecimal(node.text.substr(1));
  if (negative) {
    error(node.position, fmt::format("`{}` must be between {} and {}, found {}: negative numbers "
                                     "are not allowed",
                                     field, min, max, node.text));
    return std::nullopt;
  }
  if (!value) {
    reportWrongKind(node, field, "a number");
    return std::nullopt;
  }
  if (*value < min || *value > max) {
    error(node.position,
          fmt::format("`{}` must be between {} and {}, found {}", field, min, max, node.text));
    return std::nullopt;
  }
  return value;
}

std::optional<bool> YamlReader::readBool(const YamlNode& node, std::string_view field) {
  if (node.isScalar() && node.plain && (node.text == "true" || node.text == "false")) {
    return node.text == "true";
  }
  reportWrongKind(node, field, "true or false");
  return std::nullopt;
}

std::optional<std::string> YamlReader::readChoice(const YamlNode& node, std::string_view field,
                                                  std::initializer_list<std::string_view> choices) {
  if (!node.isScalar()) {
    reportWrongKind(node, field, fmt::format("one of {}", fmt::join(choices, ", ")));
    return std::nullopt;
  }
  if (std::find(choices.begin(), choices.end(), node.text) == choices.end()) {
    error(node.position, fmt::format("invalid {} `{}`; expected one of: {}", field, node.text,
                                     fmt::join(choices, ", ")));
    return std::nullopt;
  }
  return std::string(node.text);
}

std::optional<uint64_t> parseDecimal(std::string_view text) {
  // 19 digits always fit in 64 bits; longer numbers are out of every range we read.
  if (text.empty() || text.size() > 19) {
    return std::nullopt;
  }
  uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') {
      return std::nullopt;
    }
    value = value * 10 + static_cast<uint64_t>(c - '0');
  }
  return value;
}

}  // namespace mseg::policy
