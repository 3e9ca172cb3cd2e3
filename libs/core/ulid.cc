#include "core/ulid.h"

#include <algorithm>

namespace sb {
namespace {

constexpr char kAlphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

int DecodeChar(char c) {
  if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  for (int i = 0; i < 32; ++i) {
    if (kAlphabet[i] == c) return i;
  }
  return -1;
}

}  // namespace

std::array<uint8_t, 16> UlidGenerator::NextBytes(absl::Time now) {
  const int64_t now_ms = absl::ToUnixMillis(now);
  std::array<uint8_t, 16> bytes{};
  {
    std::lock_guard<std::mutex> lock(mu_);
    uint64_t ms = now_ms < 0 ? 0 : static_cast<uint64_t>(now_ms);
    if (ms <= last_ms_) {
      // Same (or earlier: clock stepped back) millisecond: keep the last
      // timestamp and increment the random part so ids stay ordered.
      ms = last_ms_;
      for (int i = 9; i >= 0; --i) {
        if (++last_random_[i] != 0) break;
      }
    } else {
      last_ms_ = ms;
      for (auto& b : last_random_) b = absl::Uniform<uint8_t>(gen_);
    }
    for (int i = 0; i < 6; ++i) bytes[i] = static_cast<uint8_t>(ms >> (8 * (5 - i)));
    for (int i = 0; i < 10; ++i) bytes[6 + i] = last_random_[i];
  }
  return bytes;
}

std::string UlidGenerator::Next(absl::Time now) {
  const std::array<uint8_t, 16> bytes = NextBytes(now);
  // 128 bits -> 26 base32 characters, most significant first (the first
  // character carries only 3 bits).
  std::string out(26, '0');
  unsigned __int128 v = 0;
  for (uint8_t b : bytes) v = (v << 8) | b;
  for (int i = 25; i >= 0; --i) {
    out[i] = kAlphabet[static_cast<int>(v & 31)];
    v >>= 5;
  }
  return out;
}

std::string UlidLowerBound(absl::Time t) {
  const int64_t ms = std::max<int64_t>(0, absl::ToUnixMillis(t));
  std::string out(26, '0');
  // The first 10 characters carry the 48-bit millisecond count.
  uint64_t v = static_cast<uint64_t>(ms) & ((uint64_t{1} << 48) - 1);
  for (int i = 9; i >= 0; --i) {
    out[i] = kAlphabet[static_cast<int>(v & 31)];
    v >>= 5;
  }
  return out;
}

bool IsValidUlid(std::string_view s) {
  if (s.size() != 26) return false;
  for (char c : s) {
    if (DecodeChar(c) < 0) return false;
  }
  return DecodeChar(s[0]) <= 7;
}

uint64_t UlidTimestampMs(std::string_view ulid) {
  uint64_t ms = 0;
  // The first 10 characters hold 50 bits: the 48-bit timestamp with two
  // leading zero bits.
  for (int i = 0; i < 10; ++i) ms = (ms << 5) | static_cast<uint64_t>(DecodeChar(ulid[i]));
  return ms;
}

}  // namespace sb
