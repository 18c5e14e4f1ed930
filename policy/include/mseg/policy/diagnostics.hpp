// Diagnostics: the problems found in a policy or config file, each tied to a place in it.
//
// Validation collects every problem instead of stopping at the first, so an operator fixes a
// file in one round. Errors make the file unusable; warnings leave it valid (for example a user
// name this host does not know, since one policy is deployed to many hosts).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mseg::policy {

// A place in a source text, 1-based like editors count. Line 0 means "no particular place".
struct Position {
  uint32_t line = 0;
  uint32_t column = 0;
};

enum class Severity : uint8_t { Error, Warning };

struct Diagnostic {
  Severity severity = Severity::Error;
  std::string source;  // the file name as the user gave it
  Position position;
  std::string message;

  // "file:line:column: error: message" (or "warning:"); "file: error: message" without a place.
  std::string toString() const;
};

// An append-only list of diagnostics. Not thread-safe; one instance per validation run.
class Diagnostics {
public:
  void error(std::string_view source, Position position, std::string message);
  void warning(std::string_view source, Position position, std::string message);

  // Adds every diagnostic of `other`, in its order.
  void append(const Diagnostics& other);

  const std::vector<Diagnostic>& all() const { return items_; }
  size_t errorCount() const { return error_count_; }
  size_t warningCount() const { return items_.size() - error_count_; }
  bool hasErrors() const { return error_count_ > 0; }

  // Every diagnostic, ordered by source, line and column (stable otherwise).
  std::vector<const Diagnostic*> sorted() const;
  // sorted(), each on its own line as Diagnostic::toString() writes it.
  std::string format() const;

private:
  std::vector<Diagnostic> items_;
  size_t error_count_ = 0;
};

// "1 error", "3 errors": for the message of a failed Result.
std::string countErrors(size_t count);

}  // namespace mseg::policy
