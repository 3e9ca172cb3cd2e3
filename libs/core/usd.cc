#include "core/usd.h"

#include <algorithm>

namespace sb {

namespace {
constexpr int64_t kMicros = 1'000'000;
constexpr int64_t kMaxUsd = 1'000'000 * kMicros;  // $1,000,000
}  // namespace

absl::StatusOr<int64_t> ParseUsd(std::string_view text, std::string_view what) {
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(std::string(what) + "=" + std::string(text) + ": " +
                                      std::string(why));
  };
  if (text.empty()) return bad("want an amount in dollars, such as 3.00");
  const size_t dot = text.find('.');
  const std::string_view whole = text.substr(0, dot);
  const std::string_view frac = dot == std::string_view::npos ? "" : text.substr(dot + 1);
  auto digits = [](std::string_view s) {
    return std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  if (whole.empty() || !digits(whole) || !digits(frac) ||
      (dot != std::string_view::npos && frac.empty())) {
    return bad("want an amount in dollars, such as 3.00 (digits, at most one point)");
  }
  if (frac.size() > 6) return bad("at most six decimals (a micro-dollar)");
  if (whole.size() > 7) return bad("at most $1,000,000");
  int64_t micros = 0;
  for (char c : whole) micros = micros * 10 + (c - '0');
  micros *= kMicros;
  int64_t scale = kMicros / 10;
  for (char c : frac) {
    micros += (c - '0') * scale;
    scale /= 10;
  }
  if (micros > kMaxUsd) return bad("at most $1,000,000");
  return micros;
}

std::string FormatUsd(int64_t micros) {
  const bool negative = micros < 0;
  // Magnitude without overflow for INT64_MIN.
  const uint64_t m = negative ? 0 - static_cast<uint64_t>(micros) : static_cast<uint64_t>(micros);
  std::string frac = std::to_string(m % kMicros);
  frac.insert(0, 6 - frac.size(), '0');
  return (negative ? "-" : "") + std::to_string(m / kMicros) + "." + frac;
}

}  // namespace sb
