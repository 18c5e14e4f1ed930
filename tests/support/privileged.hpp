// The gate of every privileged test (suites named ...PrivilegedTest): such a test needs root, a
// cgroup v2 mount and iproute2. Where they are missing it skips, saying what is missing; under
// CI=true it fails instead, because CI must run every test.
#pragma once

#include <gtest/gtest.h>

#include <optional>
#include <string>

namespace mseg::testing {

// What keeps this process from running privileged tests, or nullopt when nothing does.
std::optional<std::string> privilegeProblem();

// Whether the environment says CI=true.
bool runningInCi();

}  // namespace mseg::testing

// Use first in a privileged fixture's SetUp() or test body (it returns from the function).
#define MSEG_REQUIRE_PRIVILEGES()                                        \
  do {                                                                   \
    if (auto mseg_problem = ::mseg::testing::privilegeProblem()) {       \
      if (::mseg::testing::runningInCi()) {                              \
        GTEST_FAIL() << "privileged test cannot run: " << *mseg_problem; \
      }                                                                  \
      GTEST_SKIP() << "privileged test cannot run: " << *mseg_problem;   \
    }                                                                    \
  } while (false)
