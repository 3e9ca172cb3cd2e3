// Prices and cost in integer micro-dollars: parsing, rounding, formatting
// and which price is in force when.
#include "billing/pricing.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>

namespace sb::billing {
namespace {

TEST(PricingTest, DollarAmountsParseToExactMicros) {
  EXPECT_EQ(*ParseUsd("3", "--input"), 3'000'000);
  EXPECT_EQ(*ParseUsd("3.00", "--input"), 3'000'000);
  EXPECT_EQ(*ParseUsd("0.30", "--cache_read"), 300'000);
  EXPECT_EQ(*ParseUsd("3.75", "--cache_write"), 3'750'000);
  EXPECT_EQ(*ParseUsd("0.000001", "--input"), 1);
  EXPECT_EQ(*ParseUsd("1234.567891", "--input"), 1'234'567'891);
  EXPECT_EQ(*ParseUsd("1000000", "--input"), 1'000'000'000'000);
  EXPECT_EQ(*ParseUsd("0", "--input"), 0);
  // 0.1 + 0.2 is not 0.30000000000000004 here.
  EXPECT_EQ(*ParseUsd("0.1", "--a") + *ParseUsd("0.2", "--b"), *ParseUsd("0.3", "--c"));
  for (const char* bad : {"", "-1", "+1", "1e3", "3.", ".5", "1.2.3", "0.0000001", "1000000.01",
                          "99999999", "3,00", " 3", "abc", "NaN", "inf"}) {
    auto r = ParseUsd(bad, "--output");
    ASSERT_FALSE(r.ok()) << "'" << bad << "'";
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find("--output="), std::string::npos) << r.status();
  }
}

TEST(PricingTest, CostIsExactThenRoundedHalfUpOncePerRequest) {
  const Price sonnet{.input_per_mtok = 3'000'000,
                     .output_per_mtok = 15'000'000,
                     .cache_read_per_mtok = 300'000,
                     .cache_write_per_mtok = 3'750'000};
  // 1,000 input and 500 output tokens: $0.003 + $0.0075.
  EXPECT_EQ(CostMicros(sonnet, {.input = 1000, .output = 500}), 10'500);
  EXPECT_EQ(CostMicros(sonnet, {.input = 1'000'000}), 3'000'000);
  EXPECT_EQ(CostMicros(sonnet, {.cache_read = 1'000'000, .cache_write = 1'000'000}), 4'050'000);
  // One cached token is 0.3 micro-dollars: 0 alone, but the sum is rounded
  // once: 1 input + 2 cache reads = 3.6 -> 4 (per part: 3 + 0 + 0 = 3).
  EXPECT_EQ(CostMicros(sonnet, {.cache_read = 1}), 0);
  EXPECT_EQ(CostMicros(sonnet, {.input = 1, .cache_read = 2}), 4);
  EXPECT_EQ(CostMicros({.input_per_mtok = 500'000}, {.input = 1}), 1) << "0.5 rounds up";
  EXPECT_EQ(CostMicros({.input_per_mtok = 499'999}, {.input = 1}), 0);
  EXPECT_EQ(CostMicros(Price{}, {.input = 5, .output = 5}), 0);
  // The largest request billing accepts at the largest price does not
  // overflow.
  const Price top{.input_per_mtok = 1'000'000'000'000, .output_per_mtok = 1'000'000'000'000};
  EXPECT_EQ(CostMicros(top, {.input = 2'000'000, .output = 1'000'000}), 3'000'000'000'000);
}

TEST(PricingTest, MicrosFormatAsDollarsWithSixDecimals) {
  EXPECT_EQ(FormatUsd(0), "0.000000");
  EXPECT_EQ(FormatUsd(1), "0.000001");
  EXPECT_EQ(FormatUsd(10'500), "0.010500");
  EXPECT_EQ(FormatUsd(15'000'000), "15.000000");
  EXPECT_EQ(FormatUsd(-1), "-0.000001");
  EXPECT_EQ(FormatUsd(std::numeric_limits<int64_t>::min()), "-9223372036854.775808");
}

TEST(PricingTest, TheBookGivesThePriceInForceAtATime) {
  PriceBook book;
  const absl::Time t1 = absl::FromUnixSeconds(1'795'000'000);
  const absl::Time t2 = t1 + absl::Hours(24);
  book.Add("m", {.from = t2, .input_per_mtok = 2});
  book.Add("m", {.from = absl::InfinitePast(), .input_per_mtok = 0});
  book.Add("m", {.from = t1, .input_per_mtok = 1});
  book.Add("late", {.from = t2, .input_per_mtok = 9});
  EXPECT_EQ(book.At("m", t1 - absl::Seconds(1))->input_per_mtok, 0);
  EXPECT_EQ(book.At("m", t1)->input_per_mtok, 1) << "in force from its time on";
  EXPECT_EQ(book.At("m", t2 - absl::Microseconds(1))->input_per_mtok, 1);
  EXPECT_EQ(book.At("m", t2 + absl::Hours(1000))->input_per_mtok, 2);
  EXPECT_EQ(book.At("late", t1), nullptr) << "no price yet";
  EXPECT_EQ(book.At("late", t2)->input_per_mtok, 9);
  EXPECT_EQ(book.At("none", t2), nullptr);
}

}  // namespace
}  // namespace sb::billing
