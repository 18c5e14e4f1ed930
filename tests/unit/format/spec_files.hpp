// Where the tests find the public reference data: shared/specs beside the repository (see
// /CMakeLists.txt of this directory for MSEG_SPECS_DIR).
#pragma once

#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

namespace mseg::format::testkit {

inline std::filesystem::path specPath(const std::string& relative) {
  return std::filesystem::path(MSEG_SPECS_DIR) / relative;
}

// The file's text, or nothing when it cannot be read; callers fail the test, since CI always
// has shared/ beside the repository and a missing file means the check did not run.
inline std::optional<std::string> readSpec(const std::string& relative) {
  std::ifstream in(specPath(relative));
  if (!in) {
    return std::nullopt;
  }
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace mseg::format::testkit
