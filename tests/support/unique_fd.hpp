// The tests' name for the project's owned file descriptor (common/include/mseg/unique_fd.hpp).
#pragma once

#include "mseg/unique_fd.hpp"

namespace mseg::testing {

using UniqueFd = mseg::UniqueFd;

}  // namespace mseg::testing
