// A fast, stable, non-cryptographic string hash: the same value in every
// process and on every machine (unlike std::hash), for choices that must
// agree across processes or runs (a model's home replica, a simulated
// reply's seed). Not for secrets: see crypto.h.
#pragma once

#include <cstdint>
#include <string_view>

namespace sb {

// 64-bit FNV-1a.
inline uint64_t Fnv1a(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace sb
