// Text a client sends or a model writes -> the rules (Scan, FindAll,
// Pending), the normalisation they read through, and the hold-back gate.
// The checks are on what each promises: findings inside the text, ordered,
// not overlapping, of a known category; normalising is the same whole or in
// pieces cut at code points; and the gate redacts the same however the
// text is cut into tokens.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "safety/gate.h"
#include "safety/normalize.h"
#include "safety/org_policy.h"
#include "safety/rules.h"

namespace {

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

void CheckFindings(std::string_view text) {
  const auto findings = sb::safety::Scan(text);
  const auto& categories = sb::safety::Categories();
  for (size_t i = 0; i < findings.size(); ++i) {
    const auto& f = findings[i];
    SB_FUZZ_CHECK(f.start < f.end && f.end <= text.size());
    if (i > 0) SB_FUZZ_CHECK(findings[i - 1].end <= f.start);  // ordered, apart
    SB_FUZZ_CHECK(std::find(categories.begin(), categories.end(), f.category) != categories.end());
    if (f.category == "pii.card_number") {
      const auto n = sb::safety::Normalize(text.substr(f.start, f.end - f.start));
      std::string digits;
      for (char c : n.text) {
        if (IsDigit(c)) digits += c;
      }
      SB_FUZZ_CHECK(digits.size() >= 13 && digits.size() <= 19);
      SB_FUZZ_CHECK(sb::safety::LuhnValid(digits));
    }
  }
}

void CheckNormalizeSplits(std::string_view text, size_t cut) {
  // Cut at a code point boundary: the pieces normalise to the whole.
  while (cut < text.size() && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) ++cut;
  const auto whole = sb::safety::Normalize(text);
  const auto left = sb::safety::Normalize(text.substr(0, cut));
  if (left.consumed != cut) return;  // `cut` inside an invalid sequence
  const auto right = sb::safety::Normalize(text.substr(cut));
  SB_FUZZ_CHECK(whole.text == left.text + right.text);
  SB_FUZZ_CHECK(whole.from.size() == whole.text.size() && whole.to.size() == whole.text.size());
  for (size_t i = 0; i < whole.text.size(); ++i) {
    SB_FUZZ_CHECK(whole.from[i] < whole.to[i] && whole.to[i] <= text.size());
    if (i > 0) SB_FUZZ_CHECK(whole.from[i - 1] <= whole.from[i]);
  }
}

// Every rule redacts.
const std::shared_ptr<const sb::safety::Policy>& RedactAll() {
  static const auto policy = [] {
    std::string rules;
    for (const std::string& c : sb::safety::Categories()) {
      rules += (rules.empty() ? "\"" : ",\"") + c + "\":{\"output\":\"redact\"}";
    }
    return *sb::safety::Policy::Parse("{\"rules\":{" + rules + "}}", 1);
  }();
  return policy;
}

std::string Redact(std::string_view text, uint8_t seed) {
  sb::safety::OutputGate gate({.policy = RedactAll(), .window = text.size() + 1});
  std::string out;
  size_t at = 0;
  uint32_t state = seed;
  while (at < text.size()) {
    state = state * 1103515245u + 12345u;
    const size_t n = seed == 0 ? text.size() : 1 + (state >> 16) % 8;
    out += gate.Push(text.substr(at, std::min(n, text.size() - at))).release;
    at += n;
  }
  return out + gate.Finish().release;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  CheckFindings(text);
  CheckNormalizeSplits(text, data[0] % (text.size() + 1));
  // The gate: cut into tokens of 1-8 bytes, the same as in one piece.
  SB_FUZZ_CHECK(Redact(text, data[0] | 1) == Redact(text, 0));
  // LuhnValid on raw input: never true for anything but digits.
  if (sb::safety::LuhnValid(text)) {
    SB_FUZZ_CHECK(std::all_of(text.begin(), text.end(), IsDigit));
  }
  return 0;
}
