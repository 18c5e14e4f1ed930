#include "mseg/format/product.hpp"

namespace mseg::format {

std::string_view productVersion() { return MSEG_VERSION; }

}  // namespace mseg::format
