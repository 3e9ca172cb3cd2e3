// What a caller sends to Safety.CheckOutput for each new output token: the
// token with the reply's recent text before it, so that a pattern split
// across tokens (an e-mail address, a card number) is seen whole. One
// definition for every caller (gateway, chat), so both gate the same way.
#pragma once

#include <string>
#include <string_view>

namespace sb::safety {

// How much earlier text goes with each token.
inline constexpr size_t kOutputContextBytes = 256;

inline std::string OutputCheckText(std::string_view so_far, std::string_view piece) {
  const size_t from = so_far.size() > kOutputContextBytes ? so_far.size() - kOutputContextBytes : 0;
  std::string out(so_far.substr(from));
  out.append(piece);
  return out;
}

}  // namespace sb::safety
