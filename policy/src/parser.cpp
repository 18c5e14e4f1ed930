// Policy v1 parser and validator: YAML tree in, Policy out, every problem reported with its
// place. The format is described in docs/policy.md; keep the two in step.
#include <openssl/evp.h>

#include <algorithm>
#include <tuple>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>

#include <fmt/format.h>

#include "mseg/policy/policy.hpp"
#include "mseg/policy/yaml_tree.hpp"
#include "mseg/utf8.hpp"
#include "policy_file.hpp"

namespace mseg::policy {
namespace {

constexpr uint32_t kMaxUid = 0xfffffffeu;  // 0xffffffff is kAnyUid and (uid_t)-1

std::string formatPosition(Position position) {
  return fmt::format("{}:{}", position.line, position.column);
}

// Names travel in every flow record and, as "segment/rule", in the kernel's 120-byte counter
// names: two names of at most 59 characters and the slash fit.
constexpr size_t kMaxNameLength = 59;

bool isNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.';
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && text.front() == ' ') {
    text.remove_prefix(1);
  }
  while (!text.empty() && text.back() == ' ') {
    text.remove_suffix(1);
  }
  return text;
}

// A relative path of non-empty components, none of them `.` or `..`: the agent joins it to its
// attach cgroup, and anything else would select outside that subtree or nothing at all.
bool isRelativeCgroupPath(std::string_view path) {
  if (path.empty() || path.front() == '/' || path.back() == '/') {
    return false;
  }
  // A NUL or control character names no cgroup directory, and a NUL would cut the pattern
  // short when it reaches fnmatch: "\0x" would then select the attach cgroup itself.
  for (unsigned char c : path) {
    if (c < 0x20 || c == 0x7f) {
      return false;
    }
  }
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = std::min(path.find('/', start), path.size());
    std::string_view part = path.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") {
      return false;
    }
    start = end + 1;
  }
  return true;
}

// Collects the names of one scope and reports every name used twice. Names are views into the
// YAML document, which outlives every scope, and are checked by sorting once at the end: no
// allocation per name of a 100,000-rule policy.
class NameScope {
public:
  NameScope(YamlReader& reader, std::string_view what) : reader_(reader), what_(what) {}

  void reserve(size_t names) { names_.reserve(names); }

  // `name` is the scalar node the name was read from.
  void add(const YamlNode& name) { names_.push_back({name.text, name.position}); }

  // Reports each later use of a name against its first use in the file; `suffix` ends the
  // message (" in segment `x`").
  void reportDuplicates(std::string_view suffix = {}) {
    std::sort(names_.begin(), names_.end(), [](const Named& a, const Named& b) {
      return std::tie(a.name, a.position.line, a.position.column) <
             std::tie(b.name, b.position.line, b.position.column);
    });
    for (size_t i = 1; i < names_.size(); i++) {
      size_t first = i - 1;
      while (i < names_.size() && names_[i].name == names_[first].name) {
        reader_.error(names_[i].position,
                      fmt::format("duplicate {} name `{}`{}; it is first defined at {}", what_,
                                  names_[i].name, suffix,
                                  formatPosition(names_[first].position)));
        i++;
      }
    }
    names_.clear();
  }

private:
  struct Named {
    std::string_view name;
    Position position;
  };
  YamlReader& reader_;
  std::string_view what_;
  std::vector<Named> names_;
};

class PolicyParser {
public:
  PolicyParser(std::string_view source, Diagnostics& out) : source_(source), reader_(source, out) {}

  // Fills `policy` with what `root` holds and reports what is wrong with it; what needs
  // other files too is left to mergePolicyFiles.
  void parse(const YamlNode& root, PolicyFile& policy) {
    if (!root.isMapping()) {
      reader_.error(
          root.position,
          fmt::format(
              "a policy must be a mapping with `version`, `workloads`, `inventory` and `segments`, found {}",
              root.kindName()));
      return;
    }
    reader_.checkFields(root, "the policy", {"version", "workloads", "inventory", "segments"});

    if (const YamlNode* version = reader_.require(root, "version", "the policy")) {
      parseVersion(*version);
    }
    forEachItem(root, "workloads", policy.workloads,
                [&](const YamlNode& item) { parseWorkload(item, policy.workloads); });
    workload_names_.reportDuplicates();
    forEachItem(root, "inventory", policy.inventory,
                [&](const YamlNode& item) { parseInventory(item, policy.inventory); });
    inventory_names_.reportDuplicates();
    forEachItem(root, "segments", policy.segments,
                [&](const YamlNode& item) { parseSegment(item, policy.segments); });
    segment_names_.reportDuplicates();
  }

private:
  void parseVersion(const YamlNode& node) {
    auto version = reader_.readUnsigned(node, "version", 0, UINT64_MAX);
    if (version && *version != kPolicyVersion) {
      reader_.error(node.position,
                    fmt::format("unsupported policy version {}; this agent reads version {}",
                                *version, kPolicyVersion));
    }
  }

  // Calls `parse_item` for each mapping in the list `key` of `parent`, if present, which adds
  // to `out`.
  template <typename T, typename ParseItem>
  void forEachItem(const YamlNode& parent, std::string_view key, std::vector<T>& out,
                   ParseItem parse_item) {
    const YamlNode* list = parent.find(key);
    if (list == nullptr || !reader_.expectSequence(*list, key)) {
      return;
    }
    out.reserve(out.size() + list->children.size());
    for (const auto& item : list->children) {
      if (!item.isMapping()) {
        reader_.error(item.position, fmt::format("expected a mapping for an item of `{}`, found {}",
                                                 key, item.kindName()));
        continue;
      }
      parse_item(item);
    }
  }

  // Calls `parse_one` for `node` itself if it is a scalar, or for each item of a non-empty
  // list of scalars.
  template <typename ParseOne>
  void forEachScalar(const YamlNode& node, std::string_view field, std::string_view expected,
                     ParseOne parse_one) {
    if (node.isScalar()) {
      parse_one(node);
      return;
    }
    if (!node.isSequence()) {
      reader_.reportWrongKind(node, field, expected);
      return;
    }
    if (node.children.empty()) {
      reader_.error(node.position,
                    fmt::format("`{}` is an empty list; leave the field out instead", field));
      return;
    }
    for (const auto& item : node.children) {
      if (!item.isScalar()) {
        reader_.reportWrongKind(item, field, expected);
        continue;
      }
      parse_one(item);
    }
  }

  // A name or label that looks like another (`app` and `app` followed by a zero-width space)
  // would select nothing, or something else, with no sign of why: refused, naming the character.
  bool rejectInvisible(Position position, std::string_view text, std::string_view what) {
    const char32_t found = firstInvisibleCharacter(text);
    if (found == 0) {
      return false;
    }
    reader_.error(position, fmt::format("{} `{}` contains the invisible character U+{:04X}; "
                                        "remove it (zero-width, bidirectional and control "
                                        "characters are not allowed)",
                                        what, validUtf8(escapeInvisible(text)),
                                        static_cast<uint32_t>(found)));
    return true;
  }

  // `text` with control and invisible characters written as `\u{XXXX}`, so that the message shows
  // where they are.
  static std::string escapeInvisible(std::string_view text) {
    std::string out;
    for (size_t at = 0; at < text.size();) {
      char32_t c = 0;
      size_t length = decodeUtf8(text, at, c);
      if (length == 0) {
        length = 1;
        out += text.substr(at, 1);
      } else if (c < 0x20 || c == 0x7f || isInvisibleCharacter(c)) {
        out += fmt::format("\\u{{{:04X}}}", static_cast<uint32_t>(c));
      } else {
        out += text.substr(at, length);
      }
      at += length;
    }
    return out;
  }

  std::optional<std::string> readName(const YamlNode& mapping, std::string_view what) {
    bool vowel = what.find_first_of("aeiou") == 0;
    const YamlNode* node =
        reader_.require(mapping, "name", fmt::format("{} {}", vowel ? "an" : "a", what));
    if (node == nullptr) {
      return std::nullopt;
    }
    auto name = reader_.readString(*node, "name");
    if (!name) {
      return std::nullopt;
    }
    if (rejectInvisible(node->position, *name, fmt::format("{} name", what))) {
      return std::nullopt;
    }
    if (!std::all_of(name->begin(), name->end(), isNameChar)) {
      reader_.error(
          node->position,
          fmt::format("invalid {} name `{}`; use letters, digits, `-`, `_` and `.`", what, *name));
      return std::nullopt;
    }
    if (name->size() > kMaxNameLength) {
      reader_.error(node->position,
                    fmt::format("{} name `{}...` is {} characters long; at most {} are allowed",
                                what, name->substr(0, 20), name->size(), kMaxNameLength));
      return std::nullopt;
    }
    return name;
  }

  // `single` and `plural` (cgroup/cgroups, user/users) are two spellings of one field.
  const YamlNode* eitherField(const YamlNode& mapping, std::string_view single,
                              std::string_view plural) {
    const YamlNode* one = mapping.find(single);
    const YamlNode* many = mapping.find(plural);
    if (one != nullptr && many != nullptr) {
      auto place = [](const YamlNode* n) {
        return std::pair(n->key_position.line, n->key_position.column);
      };
      const YamlNode* later = place(one) > place(many) ? one : many;
      reader_.error(later->key_position,
                    fmt::format("give either `{}` or `{}`, not both", single, plural));
      return nullptr;
    }
    return one != nullptr ? one : many;
  }

  Labels parseLabels(const YamlNode& mapping) {
    Labels labels;
    const YamlNode* node = mapping.find("labels");
    if (node == nullptr || !reader_.expectMapping(*node, "labels")) {
      return labels;
    }
    for (const auto& label : node->children) {
      if (label.key.empty()) {
        reader_.error(label.key_position, "a label key must not be empty");
        continue;
      }
      if (rejectInvisible(label.key_position, label.key, "label key")) {
        continue;
      }
      if (auto value = reader_.readString(label, label.key, false)) {
        if (!rejectInvisible(label.position, *value, fmt::format("label `{}`", label.key))) {
          labels.emplace(label.key, std::move(*value));
        }
      }
    }
    return labels;
  }

  void parseWorkload(const YamlNode& node, std::vector<WorkloadSpec>& workloads) {
    reader_.checkFields(node, "workload", {"name", "cgroup", "cgroups", "user", "users", "labels"});
    WorkloadSpec workload;
    workload.source = source_;
    workload.position = node.position;
    auto name = readName(node, "workload");

    const YamlNode* cgroups = eitherField(node, "cgroup", "cgroups");
    if (cgroups != nullptr) {
      forEachScalar(*cgroups, cgroups->key, "a cgroup path or a list of them",
                    [&](const YamlNode& item) { parseCgroup(item, workload.cgroups); });
    }
    const YamlNode* users = eitherField(node, "user", "users");
    if (users != nullptr) {
      forEachScalar(*users, users->key, "a user name or uid, or a list of them",
                    [&](const YamlNode& item) { parseUser(item, workload.users); });
    }
    if (node.find("cgroup") == nullptr && node.find("cgroups") == nullptr &&
        node.find("user") == nullptr && node.find("users") == nullptr) {
      reader_.error(
          node.position,
          "a workload needs `cgroup`, `cgroups`, `user` or `users`; without any it would select every process");
    }
    workload.labels = parseLabels(node);

    if (name) {
      workload_names_.add(*node.find("name"));
      workload.name = std::move(*name);
      workloads.push_back(std::move(workload));
    }
  }

  void parseCgroup(const YamlNode& item, std::vector<std::string>& cgroups) {
    if (!isRelativeCgroupPath(item.text)) {
      reader_.error(
          item.position,
          fmt::format(
              "cgroup `{}` must be a path relative to the agent's cgroup, such as system.slice/nginx.service",
              item.text));
      return;
    }
    cgroups.emplace_back(item.text);
  }

  void parseUser(const YamlNode& item, std::vector<UserSpec>& users) {
    if (auto uid = parseDecimal(item.text)) {
      if (*uid > kMaxUid) {
        reader_.error(item.position,
                      fmt::format("uid {} is out of range 0-{}", item.text, kMaxUid));
        return;
      }
      users.push_back({"", static_cast<uint32_t>(*uid), item.position});
      return;
    }
    if (item.text.empty()) {
      reader_.error(item.position, "a user name must not be empty");
      return;
    }
    users.push_back({std::string(item.text), std::nullopt, item.position});
  }

  void parseInventory(const YamlNode& node, std::vector<InventorySpec>& inventory) {
    reader_.checkFields(node, "inventory entry", {"name", "cidrs", "labels"});
    InventorySpec entry;
    entry.source = source_;
    entry.position = node.position;
    auto name = readName(node, "inventory entry");

    if (const YamlNode* cidrs = reader_.require(node, "cidrs", "an inventory entry")) {
      forEachScalar(*cidrs, "cidrs", "a list of CIDRs",
                    [&](const YamlNode& item) { parseCidrItem(item, name, entry.cidrs); });
    }
    entry.labels = parseLabels(node);

    if (name) {
      inventory_names_.add(*node.find("name"));
      entry.name = std::move(*name);
      inventory.push_back(std::move(entry));
    }
  }

  void parseCidrItem(const YamlNode& item, const std::optional<std::string>& owner,
                     std::vector<CidrSpec>& cidrs) {
    auto cidr = parseCidr(item.text);
    if (!cidr) {
      reader_.error(item.position, cidr.error().message());
      return;
    }

    std::string owner_name = owner.value_or("?");
    auto [it, inserted] =
        cidr_owners_.try_emplace({cidr->address, cidr->prefix_len}, owner_name, item.position);
    if (!inserted) {
      reader_.error(
          item.position,
          fmt::format("CIDR {} is already listed by inventory entry `{}` at {}", formatCidr(*cidr),
                      it->second.first, formatPosition(it->second.second)));
      return;
    }
    cidrs.push_back({*cidr, std::string(item.text), item.position});
  }

  void parseSegment(const YamlNode& node,
                    std::vector<std::shared_ptr<const SegmentSpec>>& segments) {
    reader_.checkFields(node, "segment", {"name", "mode", "rules"});
    SegmentSpec segment;
    segment.source = source_;
    segment.position = node.position;
    auto name = readName(node, "segment");
    if (const YamlNode* mode = node.find("mode")) {
      segment.mode = readMode(*mode).value_or(Mode::Enforce);
    }

    NameScope rule_names(reader_, "rule");
    std::string suffix = fmt::format(" in segment `{}`", name.value_or("?"));
    if (const YamlNode* rules = reader_.require(node, "rules", "a segment")) {
      rule_names.reserve(rules->children.size());
      forEachItem(node, "rules", segment.rules, [&](const YamlNode& item) {
        if (auto rule = parseRule(item)) {
          rule_names.add(*item.find("name"));
          segment.rules.push_back(std::move(*rule));
        }
      });
    }
    rule_names.reportDuplicates(suffix);

    if (name) {
      segment_names_.add(*node.find("name"));
      segment.name = std::move(*name);
      segments.push_back(std::make_shared<const SegmentSpec>(std::move(segment)));
    }
  }

  std::optional<Mode> readMode(const YamlNode& node) {
    auto mode = reader_.readChoice(node, "mode", {"enforce", "audit"});
    if (!mode) {
      return std::nullopt;
    }
    return *mode == "audit" ? Mode::Audit : Mode::Enforce;
  }

  std::optional<RuleSpec> parseRule(const YamlNode& node) {
    reader_.checkFields(
        node, "rule", {"name", "action", "mode", "from", "to", "protocol", "ports", "icmp-types"});
    RuleSpec rule;
    rule.position = node.position;
    auto name = readName(node, "rule");

    if (const YamlNode* action = node.find("action")) {
      auto text = reader_.readChoice(*action, "action", {"allow", "deny"});
      rule.action = text && *text == "deny" ? Action::Deny : Action::Allow;
    }
    if (const YamlNode* mode = node.find("mode")) {
      rule.mode = readMode(*mode);
    }
    if (const YamlNode* from = reader_.require(node, "from", "a rule")) {
      rule.from = parseSelector(*from, "from");
    }
    if (const YamlNode* to = reader_.require(node, "to", "a rule")) {
      rule.to = parseSelector(*to, "to");
    }
    parseProtocol(node, rule);

    if (!name) {
      return std::nullopt;
    }
    rule.name = std::move(*name);
    return rule;
  }

  void parseProtocol(const YamlNode& node, RuleSpec& rule) {
    std::string protocol_name = "any";
    if (const YamlNode* protocol = node.find("protocol")) {
      auto text =
          reader_.readChoice(*protocol, "protocol", {"tcp", "udp", "icmp", "icmpv6", "any"});
      if (!text) {
        return;
      }
      protocol_name = *text;
    }
    static const std::map<std::string, Protocol, std::less<>> kProtocols = {
        {"any", Protocol::Any},   {"tcp", Protocol::Tcp},       {"udp", Protocol::Udp},
        {"icmp", Protocol::Icmp}, {"icmpv6", Protocol::Icmpv6},
    };
    rule.protocol = kProtocols.find(protocol_name)->second;
    bool has_ports = rule.protocol == Protocol::Tcp || rule.protocol == Protocol::Udp;
    bool has_types = rule.protocol == Protocol::Icmp || rule.protocol == Protocol::Icmpv6;

    parseL4Field(node, "ports", has_ports, "tcp or udp", protocol_name,
                 "a port, a range or a list of them",
                 [&](const YamlNode& item) { parsePortItem(item, rule.ports); });
    parseL4Field(node, "icmp-types", has_types, "icmp or icmpv6", protocol_name,
                 "an ICMP type or a list of them",
                 [&](const YamlNode& item) { parseIcmpType(item, rule.icmp_types); });
  }

  // `ports` and `icmp-types` refine a protocol; on any other protocol they are an error.
  template <typename ParseOne>
  void parseL4Field(const YamlNode& rule, std::string_view field, bool applies,
                    std::string_view needs, std::string_view protocol, std::string_view expected,
                    ParseOne parse_one) {
    const YamlNode* node = rule.find(field);
    if (node == nullptr) {
      return;
    }
    if (!applies) {
      reader_.error(node->key_position,
                    fmt::format("`{}` needs protocol {}; this rule's protocol is `{}`", field,
                                needs, protocol));
      return;
    }
    forEachScalar(*node, field, expected, parse_one);
  }

  void parsePortItem(const YamlNode& item, std::vector<PortRange>& ports) {
    std::string_view text = item.text;
    size_t dash = text.find('-');
    auto first = parseDecimal(trim(text.substr(0, dash)));
    auto last = dash == std::string_view::npos ? first : parseDecimal(trim(text.substr(dash + 1)));
    if (!first || !last) {
      reader_.error(
          item.position,
          fmt::format("`{}` is not a port; write a number 1-65535 or a range such as 9100-9199",
                      text));
      return;
    }

    bool ok = true;
    for (uint64_t port : {*first, *last}) {
      if (port == 0 || port > 65535) {
        reader_.error(item.position, fmt::format("port {} is out of range 1-65535", port));
        ok = false;
        break;
      }
    }
    if (ok && *first > *last) {
      reader_.error(item.position, fmt::format("port range {}-{} is reversed; write {}-{}", *first,
                                               *last, *last, *first));
      ok = false;
    }
    if (ok) {
      ports.push_back({static_cast<uint16_t>(*first), static_cast<uint16_t>(*last)});
    }
  }

  void parseIcmpType(const YamlNode& item, std::vector<uint8_t>& types) {
    auto type = parseDecimal(item.text);
    if (!type) {
      reader_.error(item.position,
                    fmt::format("`{}` is not an ICMP type; write a number 0-255", item.text));
      return;
    }
    if (*type > 255) {
      reader_.error(item.position, fmt::format("ICMP type {} is out of range 0-255", *type));
      return;
    }
    types.push_back(static_cast<uint8_t>(*type));
  }

  Selector parseSelector(const YamlNode& node, std::string_view side) {
    Selector selector;
    selector.position = node.position;
    if (node.isScalar() && (node.text == "any" || node.text == "world")) {
      selector.kind = node.text == "any" ? SelectorKind::Any : SelectorKind::World;
      return selector;
    }
    if (!node.isMapping()) {
      reader_.error(
          node.position,
          fmt::format(
              "invalid selector for `{}`: expected a label mapping such as {{app: erp}}, `any` or `world`, found {}",
              side,
              node.isScalar() ? fmt::format("`{}`", node.text) : std::string(node.kindName())));
      return selector;
    }
    if (node.children.empty()) {
      reader_.error(node.position, "empty selector; write `any` to mean every peer");
      return selector;
    }

    for (const auto& label : node.children) {
      if (rejectInvisible(label.key_position, label.key, "label key")) {
        continue;
      }
      LabelRequirement requirement{std::string(label.key), {}, label.key_position};
      forEachScalar(label, label.key, "a label value or a list of them", [&](const YamlNode& item) {
        if (!rejectInvisible(item.position, item.text, fmt::format("label `{}`", label.key))) {
          requirement.values.emplace_back(item.text);
        }
      });
      selector.requirements.push_back(std::move(requirement));
    }
    return selector;
  }

  std::string source_;
  YamlReader reader_;
  NameScope workload_names_{reader_, "workload"};
  NameScope inventory_names_{reader_, "inventory entry"};
  NameScope segment_names_{reader_, "segment"};
  std::map<std::pair<Address, uint8_t>, std::pair<std::string, Position>> cidr_owners_;
};

}  // namespace

bool selectorMatches(const Selector& selector, const Labels& labels) {
  if (selector.kind != SelectorKind::Labels) {
    return false;
  }
  for (const auto& requirement : selector.requirements) {
    auto it = labels.find(requirement.key);
    if (it == labels.end() || std::find(requirement.values.begin(), requirement.values.end(),
                                        it->second) == requirement.values.end()) {
      return false;
    }
  }
  return true;
}

std::string sha256Hex(std::string_view text) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(text.data(), text.size(), digest, &length, EVP_sha256(), nullptr) != 1) {
    // SHA-256 is built into every OpenSSL; failing here means the library itself is broken.
    std::fprintf(stderr, "fatal: OpenSSL SHA-256 failed\n");
    std::abort();
  }

  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(length * 2);
  for (unsigned int i = 0; i < length; ++i) {
    hex += kHex[digest[i] >> 4];
    hex += kHex[digest[i] & 0x0f];
  }
  return hex;
}

ParsedFile parsePolicyFileText(std::string_view text, std::string_view path,
                               std::string content_hash, Diagnostics& out) {
  size_t errors_before = out.errorCount();
  auto file = std::make_shared<PolicyFile>();
  file->path = std::string(path);
  file->content_hash = std::move(content_hash);

  auto document = parseYaml(text, path, out);
  if (document) {
    PolicyParser(path, out).parse(document->root(), *file);
  }
  return {std::move(file), out.errorCount() - errors_before};
}

Result<std::shared_ptr<const PolicyFile>> parsePolicyFile(std::string_view text,
                                                          std::string_view path,
                                                          Diagnostics& out) {
  ParsedFile parsed = parsePolicyFileText(text, path, sha256Hex(text), out);
  if (parsed.errors > 0) {
    return Error::invalid(fmt::format("{}: {}", path, countErrors(parsed.errors)));
  }
  return std::shared_ptr<const PolicyFile>(std::move(parsed.file));
}

Result<Policy> parsePolicy(std::string_view text, std::string_view source_name, Diagnostics& out) {
  size_t errors_before = out.errorCount();
  ParsedFile parsed = parsePolicyFileText(text, source_name, sha256Hex(text), out);
  // Merged even when the file has errors, so that one round reports the selector keys too.
  auto policy = mergePolicyFiles({parsed.file}, source_name, out);

  size_t errors = out.errorCount() - errors_before;
  if (errors > 0) {
    return Error::invalid(fmt::format("{}: {}", source_name, countErrors(errors)));
  }
  policy->content_hash = parsed.file->content_hash;
  return policy;
}

}  // namespace mseg::policy
