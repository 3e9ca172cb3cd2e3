// Text as the rules see it, so that look-alike spellings match the same
// rule: each code point is replaced by its compatibility decomposition
// (NFKD: fullwidth "＠" and "４" become "@" and "4", ligatures split),
// case folded, with combining marks and default-ignorable code points
// (zero-width spaces and joiners, soft hyphens, bidi controls) removed and
// look-alike dashes and spaces lumped to ASCII. Every byte of the result
// remembers which bytes of the original it came from, so a match found in
// the normalised text is cut from the original.
//
// Each code point is normalised on its own (no composition across code
// points), so the result of a text is the concatenation of the results of
// any split of it at code point boundaries: what the hold-back gate relies
// on. Bytes that are not UTF-8 are kept as they are.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sb::safety {

struct Normalized {
  std::string text;
  // For each byte of `text`, the original code point it came from:
  // [from[i], to[i]) in the original.
  std::vector<uint32_t> from, to;
  // Original bytes normalised: the whole input, less an incomplete UTF-8
  // sequence at its end (more bytes may complete it).
  size_t consumed = 0;

  // The original bytes [start, end) a normalised span came from.
  size_t OriginalStart(size_t i) const { return i < text.size() ? from[i] : consumed; }
  size_t OriginalEnd(size_t i) const { return i > 0 ? to[i - 1] : 0; }
};

Normalized Normalize(std::string_view original);

}  // namespace sb::safety
