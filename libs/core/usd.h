// Dollar amounts in integer micro-dollars (1 USD = 1,000,000), never in
// floating point: prices, costs, budgets and reports.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace sb {

// "3", "3.00", "0.3", "1234.567891" -> micro-dollars. At most six decimals,
// no sign, no exponent, at most $1,000,000: InvalidArgument otherwise,
// naming `what`.
absl::StatusOr<int64_t> ParseUsd(std::string_view text, std::string_view what);
// Micro-dollars as a decimal string of dollars with six decimals
// ("-0.000001", "15.000000").
std::string FormatUsd(int64_t micros);

}  // namespace sb
