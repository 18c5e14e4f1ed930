#include "ocsf_schema.hpp"

#include <cerrno>
#include <cstdint>
#include <fstream>
#include <limits>
#include <optional>
#include <regex>
#include <sstream>

#include <fmt/format.h>

namespace mseg::format::testkit {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// The schema server computes these enums from categories.json and each class's uid instead of
// taking them from the files (which list only 0); validate() checks them by that computation.
constexpr std::string_view kComputedUids[] = {"category_uid", "class_uid"};

// nlohmann reports a parse error as a discarded value when asked not to throw.
Result<json> readJson(const fs::path& path) {
  std::ifstream in(path);
  if (!in) {
    return Error::fromErrno(errno, fmt::format("open {}", path.string()));
  }
  std::stringstream text;
  text << in.rdbuf();
  json parsed = json::parse(text.str(), nullptr, false);
  if (parsed.is_discarded()) {
    return Error::invalid(fmt::format("{}: not valid JSON", path.string()));
  }
  return parsed;
}

// Every *.json under `dir` that has a name, by that name.
Result<std::map<std::string, json>> readDefinitions(const fs::path& dir) {
  std::map<std::string, json> definitions;
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, ec);
  for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->path().extension() != ".json") {
      continue;
    }
    auto definition = readJson(it->path());
    if (!definition) {
      return definition.error();
    }
    if (definition->contains("name") && (*definition)["name"].is_string()) {
      std::string name = (*definition)["name"].get<std::string>();
      definitions[name] = std::move(*definition);
    }
  }
  if (ec) {
    return Error::fromErrno(ec.value(), fmt::format("read {}", dir.string()));
  }
  return definitions;
}

// Objects merge key by key, so an include that adds enum values extends the enum; any other
// value is replaced by the later layer.
void mergeInto(json& base, const json& layer) {
  if (!base.is_object() || !layer.is_object()) {
    base = layer;
    return;
  }
  for (auto it = layer.begin(); it != layer.end(); ++it) {
    mergeInto(base[it.key()], it.value());
  }
}

std::string joinPath(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

bool isPresent(const json& object, const std::string& key) {
  auto it = object.find(key);
  return it != object.end() && !it->is_null();
}

std::string formatEnumKey(const json& value) {
  if (value.is_number_integer()) {
    return value.is_number_unsigned() ? std::to_string(value.get<uint64_t>())
                                      : std::to_string(value.get<int64_t>());
  }
  return value.is_string() ? value.get<std::string>() : value.dump();
}

}  // namespace

class OcsfSchema::Validation {
public:
  Validation(const OcsfSchema& schema, std::set<std::string> claimed_profiles)
      : schema_(schema), claimed_(std::move(claimed_profiles)) {}

  void report(const std::string& path, const std::string& message) {
    problems_.push_back(fmt::format("{}: {}", path.empty() ? "(event)" : path, message));
  }

  void checkObject(const json& value, const Definition& definition, const std::string& path) {
    if (!value.is_object()) {
      report(path, fmt::format("expected an object ({}), found {}", definition.name, value.dump()));
      return;
    }

    for (const auto& [name, attribute] : definition.attributes) {
      bool required = attribute.definition.value("requirement", "") == "required";
      if (required && isActive(attribute) && !isPresent(value, name)) {
        report(joinPath(path, name), fmt::format("required by {} but missing", definition.name));
      }
    }

    for (auto it = value.begin(); it != value.end(); ++it) {
      std::string child = joinPath(path, it.key());
      auto attribute = definition.attributes.find(it.key());
      if (attribute == definition.attributes.end()) {
        report(child, fmt::format("not an attribute of {}", definition.name));
        continue;
      }
      if (!isActive(attribute->second)) {
        report(child, fmt::format("belongs to profile `{}`, which metadata.profiles does not claim",
                                  attribute->second.profile));
      }
      checkValue(it.value(), attribute->second.definition, child);
    }

    checkSiblings(value, definition, path);
    checkConstraints(value, definition, path);
  }

  std::vector<std::string> takeProblems() && { return std::move(problems_); }

private:
  bool isActive(const Attribute& attribute) const {
    return attribute.profile.empty() || claimed_.count(attribute.profile) > 0;
  }

  void checkValue(const json& value, const json& definition, const std::string& path) {
    std::string type = definition.value("type", "");
    if (!definition.value("is_array", false)) {
      checkScalar(value, type, definition, path);
      return;
    }
    if (!value.is_array()) {
      report(path, fmt::format("expected an array of {}, found {}", type, value.dump()));
      return;
    }
    for (size_t i = 0; i < value.size(); ++i) {
      checkScalar(value[i], type, definition, fmt::format("{}[{}]", path, i));
    }
  }

  void checkScalar(const json& value, const std::string& type, const json& definition,
                   const std::string& path) {
    if (type == "object") {
      if (!value.is_object()) {
        report(path, fmt::format("expected an object, found {}", value.dump()));
      }
      return;
    }
    if (auto object = schema_.objects_.find(type); object != schema_.objects_.end()) {
      checkObject(value, object->second, path);
      return;
    }
    if (!schema_.types_.contains(type)) {
      report(path, fmt::format("the dictionary gives the unknown type `{}`", type));
      return;
    }
    if (!checkPrimitive(value, type, path)) {
      return;
    }
    if (definition.contains("enum") && !definition["enum"].contains(formatEnumKey(value))) {
      report(path, fmt::format("{} is not a value of the enum", value.dump()));
    }
  }

  // Walks a derived type (ip_t, port_t, timestamp_t, ...) down to its base type, keeping the
  // most specific pattern, length and range on the way. Returns whether the value passed.
  bool checkPrimitive(const json& value, const std::string& type, const std::string& path) {
    const json* pattern = nullptr;
    const json* range = nullptr;
    std::optional<size_t> max_len;
    std::string base = type;
    for (int depth = 0; depth < 8; ++depth) {
      auto entry = schema_.types_.find(base);
      if (entry == schema_.types_.end()) {
        break;
      }
      if (pattern == nullptr && entry->contains("regex")) {
        pattern = &(*entry)["regex"];
      }
      if (range == nullptr && entry->contains("range")) {
        range = &(*entry)["range"];
      }
      if (!max_len && entry->contains("max_len")) {
        max_len = (*entry)["max_len"].get<size_t>();
      }
      if (!entry->contains("type")) {
        break;
      }
      base = (*entry)["type"].get<std::string>();
    }

    size_t before = problems_.size();
    auto fail = [&](std::string_view expected) {
      report(path, fmt::format("expected {} ({}), found {}", expected, type, value.dump()));
    };
    if (base == "string_t") {
      if (!value.is_string()) {
        fail("a string");
      } else if (max_len && value.get<std::string>().size() > *max_len) {
        report(path, fmt::format("longer than {} ({})", *max_len, type));
      } else if (pattern != nullptr && !matches(*pattern, value.get<std::string>())) {
        report(path, fmt::format("`{}` does not match the pattern of {}", value.get<std::string>(),
                                 type));
      }
    } else if (base == "integer_t") {
      // OCSF's integer is 32 bits wide; long_t is the 64-bit one.
      if (!isIntegerWithin(value, std::numeric_limits<int32_t>::min(),
                           std::numeric_limits<int32_t>::max())) {
        fail("a 32-bit integer");
      }
    } else if (base == "long_t") {
      if (!isIntegerWithin(value, std::numeric_limits<int64_t>::min(),
                           std::numeric_limits<int64_t>::max())) {
        fail("a 64-bit integer");
      }
    } else if (base == "float_t") {
      if (!value.is_number()) {
        fail("a number");
      }
    } else if (base == "boolean_t") {
      if (!value.is_boolean()) {
        fail("a boolean");
      }
    } else if (base != "json_t") {
      report(path, fmt::format("the dictionary gives the unknown base type `{}`", base));
    }

    if (problems_.size() == before && range != nullptr && value.is_number()) {
      double number = value.get<double>();
      if (number < (*range)[0].get<double>() || number > (*range)[1].get<double>()) {
        report(path, fmt::format("{} is outside {} ({})", value.dump(), range->dump(), type));
      }
    }
    return problems_.size() == before;
  }

  static bool isIntegerWithin(const json& value, int64_t min, int64_t max) {
    if (value.is_number_unsigned()) {
      return value.get<uint64_t>() <= static_cast<uint64_t>(max);
    }
    return value.is_number_integer() && value.get<int64_t>() >= min && value.get<int64_t>() <= max;
  }

  bool matches(const json& pattern, const std::string& text) {
    std::string source = pattern.get<std::string>();
    auto cached = patterns_.find(source);
    if (cached == patterns_.end()) {
      // std::regex reports a pattern it cannot compile by throwing; the schema's are ECMAScript.
      try {
        cached = patterns_.emplace(source, std::regex(source)).first;
      } catch (const std::regex_error& error) {
        report("(schema)", fmt::format("pattern `{}` does not compile: {}", source, error.what()));
        return true;
      }
    }
    return std::regex_search(text, cached->second);
  }

  // An `_id` and its caption sibling must agree, except for 99 (Other), whose caption is the
  // source's own word.
  void checkSiblings(const json& value, const Definition& definition, const std::string& path) {
    for (const auto& [name, attribute] : definition.attributes) {
      const json& spec = attribute.definition;
      if (!spec.contains("sibling") || !spec.contains("enum") || !isPresent(value, name)) {
        continue;
      }
      std::string sibling = spec["sibling"].get<std::string>();
      std::string key = formatEnumKey(value[name]);
      if (!isPresent(value, sibling) || key == "99" || !spec["enum"].contains(key)) {
        continue;
      }
      std::string caption = spec["enum"][key].value("caption", "");
      if (value[sibling] != caption) {
        report(joinPath(path, sibling), fmt::format("{} is not `{}`, the caption of {} {}",
                                                    value[sibling].dump(), caption, name, key));
      }
    }
  }

  void checkConstraints(const json& value, const Definition& definition, const std::string& path) {
    for (const char* kind : {"at_least_one", "just_one"}) {
      if (!definition.constraints.contains(kind)) {
        continue;
      }
      const json& names = definition.constraints[kind];
      size_t present = 0;
      for (const auto& name : names) {
        present += isPresent(value, name.get<std::string>()) ? 1 : 0;
      }
      bool ok = std::string_view(kind) == "just_one" ? present == 1 : present >= 1;
      if (!ok) {
        report(path, fmt::format("{} wants {} of {}, found {}", definition.name, kind, names.dump(),
                                 present));
      }
    }
  }

  const OcsfSchema& schema_;
  std::set<std::string> claimed_;
  std::map<std::string, std::regex> patterns_;
  std::vector<std::string> problems_;
};

Result<OcsfSchema> OcsfSchema::load(const fs::path& schema_dir, const fs::path& fallback_dir) {
  OcsfSchema schema;
  schema.schema_dir_ = schema_dir;
  schema.fallback_dir_ = fallback_dir;

  auto version = readJson(schema_dir / "version.json");
  auto dictionary = readJson(schema_dir / "dictionary.json");
  auto categories = readJson(schema_dir / "categories.json");
  for (const auto* file : {&version, &dictionary, &categories}) {
    if (!file->ok()) {
      return file->error().wrap("load ocsf schema");
    }
  }
  schema.version_ = version->value("version", "");
  schema.dictionary_ = (*dictionary)["attributes"];
  schema.types_ = (*dictionary)["types"]["attributes"];
  schema.categories_ = (*categories)["attributes"];

  auto raw_objects = readDefinitions(schema_dir / "objects");
  if (!raw_objects) {
    return raw_objects.error().wrap("load ocsf schema");
  }
  auto raw_events = readDefinitions(schema_dir / "events");
  if (!raw_events) {
    return raw_events.error().wrap("load ocsf schema");
  }

  for (const auto& [name, raw] : *raw_objects) {
    auto definition = schema.resolve(*raw_objects, schema.objects_, name, 0);
    if (!definition) {
      return definition.error().wrap("load ocsf schema");
    }
  }
  for (const auto& [name, raw] : *raw_events) {
    auto definition = schema.resolve(*raw_events, schema.events_, name, 0);
    if (!definition) {
      return definition.error().wrap("load ocsf schema");
    }
  }
  for (auto& [name, event] : schema.events_) {
    for (std::string_view uid : kComputedUids) {
      if (auto attribute = event.attributes.find(std::string(uid));
          attribute != event.attributes.end()) {
        attribute->second.definition.erase("enum");
      }
    }
  }
  return schema;
}

Result<json> OcsfSchema::readInclude(const std::string& relative_path) {
  fs::path path = schema_dir_ / relative_path;
  if (!fs::exists(path)) {
    path = fallback_dir_ / relative_path;
  }
  return readJson(path);
}

Result<OcsfSchema::Definition> OcsfSchema::resolve(const std::map<std::string, json>& raw,
                                                   std::map<std::string, Definition>& resolved,
                                                   const std::string& name, int depth) {
  if (auto done = resolved.find(name); done != resolved.end()) {
    return done->second;
  }
  if (depth > 16) {
    return Error::invalid(fmt::format("{}: `extends` chain too deep or circular", name));
  }
  auto source_it = raw.find(name);
  if (source_it == raw.end()) {
    return Error::invalid(fmt::format("no definition named `{}`", name));
  }
  const json& source = source_it->second;

  Definition definition;
  if (source.contains("extends")) {
    auto parent = resolve(raw, resolved, source["extends"].get<std::string>(), depth + 1);
    if (!parent) {
      return parent.error().wrap(name);
    }
    definition = std::move(parent).value();
  }
  definition.name = name;
  definition.caption = source.value("caption", "");
  definition.uid = source.value("uid", 0);
  definition.category = source.value("category", definition.category);
  for (const auto& profile : source.value("profiles", json::array())) {
    definition.profiles.insert(profile.get<std::string>());
  }

  // Includes first, then the file's own attributes over them.
  json attributes = source.value("attributes", json::object());
  json includes = attributes.value("$include", json::array());
  if (includes.is_string()) {
    includes = json::array({includes});
  }
  for (const auto& include_path : includes) {
    auto include = readInclude(include_path.get<std::string>());
    if (!include) {
      return include.error().wrap(name);
    }
    bool is_profile = include->value("meta", "") == "profile";
    std::string profile = is_profile ? include->value("name", "") : "";
    if (!profile.empty()) {
      definition.profiles.insert(profile);
    }
    for (auto it = (*include)["attributes"].begin(); it != (*include)["attributes"].end(); ++it) {
      if (auto merged = mergeLayer(definition, it.key(), it.value(), profile); !merged) {
        return merged.error();
      }
    }
  }
  for (auto it = attributes.begin(); it != attributes.end(); ++it) {
    if (it.key() == "$include") {
      continue;
    }
    if (auto merged = mergeLayer(definition, it.key(), it.value(), ""); !merged) {
      return merged.error();
    }
  }
  if (source.contains("constraints")) {
    definition.constraints = source["constraints"];
  }

  resolved[name] = definition;
  return definition;
}

Status OcsfSchema::mergeLayer(Definition& definition, const std::string& attribute,
                              const json& layer, const std::string& profile) {
  auto [it, inserted] = definition.attributes.try_emplace(attribute);
  if (inserted) {
    auto entry = dictionary_.find(attribute);
    if (entry == dictionary_.end()) {
      return Error::invalid(
          fmt::format("{}: attribute `{}` is not in dictionary.json", definition.name, attribute));
    }
    it->second.definition = *entry;
    it->second.profile = profile;
  }
  mergeInto(it->second.definition, layer);
  // A class may take an attribute out of its profile with "profile": null.
  if (layer.contains("profile")) {
    it->second.profile = layer["profile"].is_string() ? layer["profile"].get<std::string>() : "";
  }
  return {};
}

std::vector<std::string> OcsfSchema::validate(const json& event,
                                              std::string_view class_name) const {
  auto found = events_.find(std::string(class_name));
  if (found == events_.end()) {
    return {fmt::format("no event class named `{}`", class_name)};
  }
  const Definition& definition = found->second;

  std::set<std::string> claimed;
  if (event.contains("metadata") && event["metadata"].is_object() &&
      event["metadata"].contains("profiles") && event["metadata"]["profiles"].is_array()) {
    for (const auto& profile : event["metadata"]["profiles"]) {
      if (profile.is_string()) {
        claimed.insert(profile.get<std::string>());
      }
    }
  }
  Validation validation(*this, claimed);

  validation.checkObject(event, definition, "");
  if (!event.is_object()) {
    return std::move(validation).takeProblems();
  }

  for (const auto& profile : claimed) {
    if (definition.profiles.count(profile) == 0) {
      validation.report("metadata.profiles",
                        fmt::format("{} has no profile `{}`", definition.name, profile));
    }
  }

  // Category, class and type are computed: class_uid = category uid * 1000 + class uid,
  // type_uid = class_uid * 100 + activity_id, and the names are the captions.
  json category = categories_.value(definition.category, json::object());
  int64_t category_uid = category.value("uid", -1);
  int64_t class_uid = category_uid * 1000 + definition.uid;
  auto expect = [&](const std::string& key, const json& expected) {
    if (isPresent(event, key) && event[key] != expected) {
      validation.report(
          key, fmt::format("{} where the schema computes {}", event[key].dump(), expected.dump()));
    }
  };
  expect("category_uid", category_uid);
  expect("category_name", category.value("caption", ""));
  expect("class_uid", class_uid);
  expect("class_name", definition.caption);
  if (isPresent(event, "activity_id") && event["activity_id"].is_number_integer()) {
    int64_t activity_id = event["activity_id"].get<int64_t>();
    expect("type_uid", class_uid * 100 + activity_id);
    auto activity_attribute = definition.attributes.find("activity_id");
    json activities = activity_attribute == definition.attributes.end()
                          ? json::object()
                          : activity_attribute->second.definition.value("enum", json::object());
    std::string key = std::to_string(activity_id);
    if (activities.contains(key) && activity_id != 99) {
      std::string activity = activities[key].value("caption", "");
      expect("type_name", fmt::format("{}: {}", definition.caption, activity));
    }
  }
  if (event.contains("metadata") && event["metadata"].is_object() &&
      isPresent(event["metadata"], "version") && event["metadata"]["version"] != version_) {
    validation.report("metadata.version",
                      fmt::format("{} in a check against schema {}",
                                  event["metadata"]["version"].dump(), version_));
  }
  return std::move(validation).takeProblems();
}

}  // namespace mseg::format::testkit
