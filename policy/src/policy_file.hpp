// Internals shared by the parser, the merge step and the policy source.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "mseg/policy/diagnostics.hpp"
#include "mseg/policy/policy.hpp"

namespace mseg::policy {

// A parsed file, complete or (when errors > 0) holding what could be read of it.
struct ParsedFile {
  std::shared_ptr<PolicyFile> file;
  size_t errors = 0;  // reported to the Diagnostics given to the parse
};

// Parses `text` as one file of a policy; `content_hash` is its SHA-256, which the caller has
// (a loader computes it first to find an unchanged file). Thread-safe for distinct arguments.
ParsedFile parsePolicyFileText(std::string_view text, std::string_view path,
                               std::string content_hash, Diagnostics& out);

}  // namespace mseg::policy
