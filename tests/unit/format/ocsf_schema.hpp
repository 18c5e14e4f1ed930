// An OCSF schema release read from its source files (dictionary, categories, events, objects,
// profiles), and a validator that checks rendered events against one of its classes the way a
// strict consumer would.
#pragma once

#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "mseg/result.hpp"

namespace mseg::format::testkit {

class OcsfSchema {
public:
  // Reads the release in `schema_dir` (laid out as in the ocsf-schema repository). An `$include`
  // missing there is read from `fallback_dir`, which holds the same relative paths. Fails naming
  // the file that is missing, unparsable, or names an attribute the dictionary lacks.
  static Result<OcsfSchema> load(const std::filesystem::path& schema_dir,
                                 const std::filesystem::path& fallback_dir);

  // Every way `event` departs from the event class `class_name` ("network_activity"), each
  // naming the attribute's path; empty when it conforms. Checks: required attributes of the
  // class, of nested objects and of the profiles metadata.profiles claims; no attribute the
  // class or object does not define (or that only an unclaimed profile defines); value types
  // per dictionary.json (with the regex, length and range of derived types); enum values
  // defined and `_id` siblings captioned accordingly; object constraints (at_least_one,
  // just_one); category, class and type uids as the schema computes them; metadata.version.
  std::vector<std::string> validate(const nlohmann::json& event, std::string_view class_name) const;

private:
  struct Attribute {
    nlohmann::json definition;  // the dictionary entry with every layer merged over it
    std::string profile;        // the profile that brings the attribute; empty when none
  };

  // A class or object with its `extends` chain and `$include`s resolved.
  struct Definition {
    std::string name;
    std::string caption;
    int uid = 0;           // classes: the uid within the category
    std::string category;  // classes
    std::map<std::string, Attribute> attributes;
    nlohmann::json constraints = nlohmann::json::object();
    std::set<std::string> profiles;
  };

  class Validation;

  Result<nlohmann::json> readInclude(const std::string& relative_path);
  Result<Definition> resolve(const std::map<std::string, nlohmann::json>& raw,
                             std::map<std::string, Definition>& resolved, const std::string& name,
                             int depth);
  Status mergeLayer(Definition& definition, const std::string& attribute,
                    const nlohmann::json& layer, const std::string& profile);

  std::filesystem::path schema_dir_;
  std::filesystem::path fallback_dir_;
  std::string version_;
  nlohmann::json dictionary_;  // "attributes" of dictionary.json
  nlohmann::json types_;       // "types"."attributes" of dictionary.json
  nlohmann::json categories_;  // "attributes" of categories.json
  std::map<std::string, Definition> events_;
  std::map<std::string, Definition> objects_;
};

}  // namespace mseg::format::testkit
