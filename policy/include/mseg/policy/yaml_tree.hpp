// A small YAML document tree whose every node knows its 1-based line and column, so that a
// validator can point at the exact offending place. Built on libyaml's event API: yaml-cpp is
// about 20 times slower, and a policy with 100,000 rules must load in well under a second.
//
// Used for the policy file and for the agent's config file. Only what those need is kept: no
// tags, no anchors or aliases (they are reported as errors), one document per text.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mseg/policy/diagnostics.hpp"
#include "mseg/result.hpp"

namespace mseg::policy {

enum class YamlKind : uint8_t { Null, Scalar, Sequence, Mapping };

// A node of a YamlDocument. It is a view: its text and children live in the document, which
// must outlive it. Copying a node is cheap.
struct YamlNode {
  YamlKind kind = YamlKind::Null;
  // Unquoted and untagged: only such a scalar may be read as a number or a boolean, so that a
  // quoted "22" stays the string it was written as.
  bool plain = true;
  Position position;
  std::string_view text;  // Scalar only
  // Sequence items, or Mapping values in file order with unique keys.
  std::span<const YamlNode> children;
  // Set on the values of a mapping: their key and where it is written.
  std::string_view key;
  Position key_position;

  bool isNull() const { return kind == YamlKind::Null; }
  bool isScalar() const { return kind == YamlKind::Scalar; }
  bool isSequence() const { return kind == YamlKind::Sequence; }
  bool isMapping() const { return kind == YamlKind::Mapping; }

  // The value of `key` in a mapping; nullptr when absent or when this is not a mapping.
  const YamlNode* find(std::string_view key) const;

  // What a user would call this node in a message: "a string", "a number", "a list", ...
  std::string_view kindName() const;
};

// A parsed text. Nodes are stored flat, children contiguous, and scalars in a few large
// blocks: a 100,000-rule policy has millions of nodes, and one allocation per node or per
// child list cost more than libyaml's own parsing. Movable, not copyable (nodes point into it).
class YamlDocument {
public:
  YamlDocument() = default;
  YamlDocument(YamlDocument&&) = default;
  YamlDocument& operator=(YamlDocument&&) = default;
  YamlDocument(const YamlDocument&) = delete;
  YamlDocument& operator=(const YamlDocument&) = delete;

  const YamlNode& root() const { return root_; }

private:
  friend class YamlDocumentBuilder;

  YamlNode root_;
  std::vector<YamlNode> nodes_;  // every node but the root; children spans point in here
  std::vector<std::unique_ptr<char[]>> text_blocks_;
};

// Parses one YAML document. Fails (with one diagnostic at libyaml's problem mark) only when the
// text is not well-formed YAML. Duplicate mapping keys, non-scalar keys, aliases and extra
// documents are reported in `out` while the tree is still returned, with the first of
// duplicate keys kept, so that a validator can go on to find the other problems. An empty
// text gives a Null root at line 1, column 1.
Result<YamlDocument> parseYaml(std::string_view text, std::string_view source, Diagnostics& out);

// Reads typed values from a tree and reports, tagged with the source name, every value that
// does not fit. Each read returns nullopt (or false) after reporting. Not thread-safe.
class YamlReader {
public:
  YamlReader(std::string_view source, Diagnostics& out) : source_(source), out_(out) {}

  std::string_view source() const { return source_; }
  void error(Position position, std::string message) {
    out_.error(source_, position, std::move(message));
  }
  void warning(Position position, std::string message) {
    out_.warning(source_, position, std::move(message));
  }

  // Reports every key of `mapping` not in `allowed`, naming the allowed ones. `what` names
  // the mapping in messages ("rule", "workload").
  void checkFields(const YamlNode& mapping, std::string_view what,
                   std::initializer_list<std::string_view> allowed);

  // The value of a required field, or nullptr after reporting it missing at the mapping.
  const YamlNode* require(const YamlNode& mapping, std::string_view key, std::string_view what);

  // Checks the kind of a field's value; `field` names it in the message.
  bool expectMapping(const YamlNode& node, std::string_view field);
  bool expectSequence(const YamlNode& node, std::string_view field);

  // Any scalar, as written (a plain 22 reads as "22"); a non-empty one if `non_empty`.
  std::optional<std::string> readString(const YamlNode& node, std::string_view field,
                                        bool non_empty = true);
  // A plain decimal integer within [min, max].
  std::optional<uint64_t> readUnsigned(const YamlNode& node, std::string_view field, uint64_t min,
                                       uint64_t max);
  // A plain true or false.
  std::optional<bool> readBool(const YamlNode& node, std::string_view field);
  // A scalar that must be one of `choices`; the message lists them.
  std::optional<std::string> readChoice(const YamlNode& node, std::string_view field,
                                        std::initializer_list<std::string_view> choices);

  void reportWrongKind(const YamlNode& node, std::string_view field, std::string_view expected);

private:
  std::string_view source_;
  Diagnostics& out_;
};

// Decimal digits only, no sign, no YAML 1.1 octal or hex: the forms a policy author means.
std::optional<uint64_t> parseDecimal(std::string_view text);

}  // namespace mseg::policy
