// File descriptor helpers shared by the state store and the file outputs (mseg/files.hpp).
#pragma once

#include "mseg/files.hpp"
#include "mseg/unique_fd.hpp"

namespace mseg::collector {

// An owned descriptor, closed on destruction.
using FileDescriptor = mseg::UniqueFd;

}  // namespace mseg::collector
