// Diagnostics as the user reads them.
#include "mseg/policy/diagnostics.hpp"

#include <gtest/gtest.h>

namespace mseg::policy {
namespace {

class DiagnosticsTest : public ::testing::Test {
protected:
  Diagnostics out_;
};

TEST_F(DiagnosticsTest, FormatsFileLineColumnSeverityAndMessage) {
  out_.error("p.yaml", {3, 7}, "bad thing");
  out_.warning("p.yaml", {}, "odd thing");

  EXPECT_EQ(out_.all()[0].toString(), "p.yaml:3:7: error: bad thing");
  EXPECT_EQ(out_.all()[1].toString(), "p.yaml: warning: odd thing");
}

TEST_F(DiagnosticsTest, CountsErrorsAndWarningsApart) {
  out_.error("p.yaml", {1, 1}, "a");
  out_.warning("p.yaml", {2, 1}, "b");
  out_.error("p.yaml", {3, 1}, "c");

  EXPECT_TRUE(out_.hasErrors());
  EXPECT_EQ(out_.errorCount(), 2u);
  EXPECT_EQ(out_.warningCount(), 1u);
}

TEST_F(DiagnosticsTest, FormatsInFileOrder) {
  out_.error("p.yaml", {9, 1}, "late");
  out_.warning("p.yaml", {2, 5}, "early");
  out_.error("p.yaml", {2, 3}, "earliest");

  EXPECT_EQ(out_.format(),
            "p.yaml:2:3: error: earliest\n"
            "p.yaml:2:5: warning: early\n"
            "p.yaml:9:1: error: late\n");
}

TEST_F(DiagnosticsTest, SaysHowManyErrors) {
  EXPECT_EQ(countErrors(1), "1 error");
  EXPECT_EQ(countErrors(3), "3 errors");
}

}  // namespace
}  // namespace mseg::policy
