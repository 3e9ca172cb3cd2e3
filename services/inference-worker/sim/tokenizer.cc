#include "inference-worker/sim/tokenizer.h"

#include <cctype>

namespace sb::worker {
namespace {

bool IsWordByte(unsigned char c) { return std::isalnum(c) || c >= 0x80; }

// Calls fn(token) for each token of `text`.
template <typename Fn>
void ForEachToken(std::string_view text, Fn fn) {
  size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (IsWordByte(c)) {
      size_t j = i + 1;
      while (j < text.size() && IsWordByte(static_cast<unsigned char>(text[j]))) ++j;
      fn(text.substr(i, j - i));
      i = j;
    } else {
      if (!std::isspace(c)) fn(text.substr(i, 1));
      ++i;
    }
  }
}

}  // namespace

int CountWordTokens(std::string_view text) {
  int n = 0;
  ForEachToken(text, [&](std::string_view) { ++n; });
  return n;
}

namespace sim {

uint32_t TokenId(std::string_view token) {
  uint32_t h = 2166136261u;  // FNV-1a, 32 bits
  for (unsigned char c : token) {
    h ^= c;
    h *= 16777619u;
  }
  return h;
}

std::vector<uint32_t> WordTokenIds(std::string_view text) {
  std::vector<uint32_t> ids;
  ForEachToken(text, [&](std::string_view t) { ids.push_back(TokenId(t)); });
  return ids;
}

uint64_t Mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

}  // namespace sim
}  // namespace sb::worker
