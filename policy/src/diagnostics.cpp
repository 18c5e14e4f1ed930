#include "mseg/policy/diagnostics.hpp"

#include <algorithm>
#include <tuple>

#include <fmt/format.h>

namespace mseg::policy {

std::string Diagnostic::toString() const {
  std::string_view kind = severity == Severity::Error ? "error" : "warning";
  if (position.line == 0) {
    return fmt::format("{}: {}: {}", source, kind, message);
  }
  return fmt::format("{}:{}:{}: {}: {}", source, position.line, position.column, kind, message);
}

void Diagnostics::error(std::string_view source, Position position, std::string message) {
  items_.push_back({Severity::Error, std::string(source), position, std::move(message)});
  ++error_count_;
}

void Diagnostics::warning(std::string_view source, Position position, std::string message) {
  items_.push_back({Severity::Warning, std::string(source), position, std::move(message)});
}

void Diagnostics::append(const Diagnostics& other) {
  items_.insert(items_.end(), other.items_.begin(), other.items_.end());
  error_count_ += other.error_count_;
}

std::vector<const Diagnostic*> Diagnostics::sorted() const {
  std::vector<const Diagnostic*> sorted;
  sorted.reserve(items_.size());
  for (const auto& item : items_) {
    sorted.push_back(&item);
  }
  std::stable_sort(sorted.begin(), sorted.end(), [](const Diagnostic* a, const Diagnostic* b) {
    return std::tie(a->source, a->position.line, a->position.column) <
           std::tie(b->source, b->position.line, b->position.column);
  });
  return sorted;
}

std::string Diagnostics::format() const {
  std::string text;
  for (const auto* item : sorted()) {
    text += item->toString();
    text += '\n';
  }
  return text;
}

std::string countErrors(size_t count) {
  return fmt::format("{} error{}", count, count == 1 ? "" : "s");
}

}  // namespace mseg::policy
