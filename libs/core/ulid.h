// ULIDs: 128-bit ids whose canonical 26-character Crockford base32 form sorts
// by creation time (48 bits of Unix milliseconds, then 80 random bits).
//
// UlidGenerator is monotonic: two ids made in the same millisecond by one
// generator still sort in the order they were made (the random part is
// incremented), which is what keeps messages of a conversation ordered.
//
//   UlidGenerator ids;
//   std::string id = ids.Next(absl::Now());
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/random/random.h"
#include "absl/time/time.h"

namespace sb {

class UlidGenerator {
 public:
  // Thread-safe.
  std::string Next(absl::Time now);
  // The same id as 16 big-endian bytes (a W3C trace id, for one).
  std::array<uint8_t, 16> NextBytes(absl::Time now);

 private:
  std::mutex mu_;
  absl::BitGen gen_;
  uint64_t last_ms_ = 0;
  std::array<uint8_t, 10> last_random_{};
};

// True for a 26-character Crockford base32 string whose first character
// keeps the value within 128 bits.
bool IsValidUlid(std::string_view s);

// The millisecond timestamp encoded in a valid ULID.
uint64_t UlidTimestampMs(std::string_view ulid);

// The smallest ULID of `t`'s millisecond: every id made at or after `t`
// compares >= it, every id made before compares < it (a range bound for
// ULID-keyed rows). Times before 1970 give the smallest ULID.
std::string UlidLowerBound(absl::Time t);

}  // namespace sb
