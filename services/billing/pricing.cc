#include "billing/pricing.h"

#include <algorithm>
#include <cstdlib>

namespace sb::billing {

namespace {
constexpr int64_t kMicros = 1'000'000;
constexpr int64_t kMaxPerMtok = 1'000'000 * kMicros;  // $1,000,000 per MTok
}  // namespace

int64_t CostMicros(const Price& p, const TokenCounts& t) {
  // In micro-dollars × 1,000,000 (pico-dollars) until the one rounding.
  const int64_t exact = t.input * p.input_per_mtok + t.output * p.output_per_mtok +
                        t.cache_read * p.cache_read_per_mtok +
                        t.cache_write * p.cache_write_per_mtok;
  return (exact + kMicros / 2) / kMicros;
}

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
  if (micros > kMaxPerMtok) return bad("at most $1,000,000");
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

void PriceBook::Add(const std::string& model, const Price& price) {
  auto& prices = by_model_[model];
  auto at = std::upper_bound(prices.begin(), prices.end(), price.from,
                             [](absl::Time t, const Price& p) { return t < p.from; });
  prices.insert(at, price);
}

const Price* PriceBook::At(const std::string& model, absl::Time at) const {
  auto it = by_model_.find(model);
  if (it == by_model_.end()) return nullptr;
  const auto& prices = it->second;
  // The last price from at or before `at`.
  auto after = std::upper_bound(prices.begin(), prices.end(), at,
                                [](absl::Time t, const Price& p) { return t < p.from; });
  if (after == prices.begin()) return nullptr;
  return &*std::prev(after);
}

}  // namespace sb::billing
