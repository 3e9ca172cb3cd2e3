// Prices and cost, in integer micro-dollars (1 USD = 1,000,000), never in
// floating point.
//
// A price is per million tokens (MTok) for input, output, cache reads and
// cache writes, for one model (as the ledger names it), in force from a
// time until the next price of the same model. A request is priced at the
// price in force when it started; its cost is
//   round(Σ tokens × price per MTok / 1,000,000)
// rounded half up once per request (at most half a micro-dollar off).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/usd.h"

namespace sb::billing {

struct Price {
  absl::Time from = absl::InfinitePast();
  int64_t input_per_mtok = 0;  // micro-dollars per million tokens
  int64_t output_per_mtok = 0;
  int64_t cache_read_per_mtok = 0;
  int64_t cache_write_per_mtok = 0;
};

struct TokenCounts {
  int64_t input = 0;  // input tokens neither read from nor written to the cache
  int64_t output = 0;
  int64_t cache_read = 0;
  int64_t cache_write = 0;
};

// The cost of `tokens` at `price`, in micro-dollars. Token counts are at
// most a few million and prices at most $1,000,000 per MTok, so no step
// overflows 64 bits.
int64_t CostMicros(const Price& price, const TokenCounts& tokens);

// Every model's prices over time.
class PriceBook {
 public:
  void Add(const std::string& model, const Price& price);
  // The price of `model` in force at `at`; nullptr when it has none.
  const Price* At(const std::string& model, absl::Time at) const;
  bool empty() const { return by_model_.empty(); }

 private:
  std::map<std::string, std::vector<Price>> by_model_;  // each sorted by `from`
};

}  // namespace sb::billing
