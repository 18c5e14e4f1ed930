// The OCSF 1.1.0 schema, loaded once for every test of a suite that validates events.
#pragma once

#include <gtest/gtest.h>

#include <optional>
#include <string>

#include "ocsf_schema.hpp"
#include "spec_files.hpp"

namespace mseg::format::testkit {

class OcsfSchemaFixture : public ::testing::Test {
protected:
  // Loads the schema on the first test and keeps it. Here rather than in SetUpTestSuite: a
  // failure there makes GoogleTest skip the suite, and CTest would count skips, not failures.
  // A missing schema fails every test: CI has shared/ beside the repository.
  void SetUp() override {
    if (!schema_ && load_error_.empty()) {
      auto loaded = OcsfSchema::load(specPath("ocsf-1.1.0"), MSEG_OCSF_FALLBACK_DIR);
      if (loaded) {
        schema_.emplace(std::move(loaded).value());
      } else {
        load_error_ = loaded.error().message();
      }
    }
    ASSERT_TRUE(schema_.has_value()) << load_error_;
  }

  static const OcsfSchema& schema() { return *schema_; }

  // Problems found in `text` as a Network Activity event; one naming the parse error when
  // `text` is not JSON.
  static std::vector<std::string> validateNetworkActivity(const std::string& text) {
    nlohmann::json event = nlohmann::json::parse(text, nullptr, false);
    if (event.is_discarded()) {
      return {"not valid JSON: " + text};
    }
    return schema_->validate(event, "network_activity");
  }

private:
  static inline std::optional<OcsfSchema> schema_;
  static inline std::string load_error_;
};

}  // namespace mseg::format::testkit
