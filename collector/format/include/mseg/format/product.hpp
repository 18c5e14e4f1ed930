// How microseg names itself in the records it renders (OCSF metadata.product, the CEF header).
#pragma once

#include <string_view>

namespace mseg::format {

inline constexpr std::string_view kProductName = "microseg";
inline constexpr std::string_view kVendorName = "microseg";

// The project version this library was built from, for example "0.1.0".
std::string_view productVersion();

}  // namespace mseg::format
