#include "billing/pricing.h"

#include <algorithm>
#include <cstdlib>

namespace sb::billing {

namespace {
constexpr int64_t kMicros = 1'000'000;
}  // namespace

int64_t CostMicros(const Price& p, const TokenCounts& t) {
  // In micro-dollars × 1,000,000 (pico-dollars) until the one rounding.
  const int64_t exact = t.input * p.input_per_mtok + t.output * p.output_per_mtok +
                        t.cache_read * p.cache_read_per_mtok +
                        t.cache_write * p.cache_write_per_mtok;
  return (exact + kMicros / 2) / kMicros;
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
