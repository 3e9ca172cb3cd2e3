// Text a client sends or a model writes -> the PII scanners (FindPii,
// LuhnValid). There is no redaction in services/safety yet: the checks are
// on what a finding promises (pii.h), so that a later redaction can trust
// the offsets.
#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_check.h"
#include "safety/pii.h"

namespace {

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsAlnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }

void CheckCard(std::string_view text, const sb::safety::PiiFinding& f) {
  const std::string_view span = text.substr(f.start, f.end - f.start);
  SB_FUZZ_CHECK(IsDigit(span.front()) && IsDigit(span.back()));
  std::string digits;
  for (size_t i = 0; i < span.size(); ++i) {
    if (IsDigit(span[i])) {
      digits += span[i];
    } else {
      // Only single spaces or dashes, between digits.
      SB_FUZZ_CHECK(span[i] == ' ' || span[i] == '-');
      SB_FUZZ_CHECK(IsDigit(span[i - 1]) && IsDigit(span[i + 1]));
    }
  }
  SB_FUZZ_CHECK(digits.size() >= 13 && digits.size() <= 19);
  SB_FUZZ_CHECK(sb::safety::LuhnValid(digits));
  // A number inside a longer word or number is not a card number.
  SB_FUZZ_CHECK(f.start == 0 || !IsAlnum(text[f.start - 1]));
  SB_FUZZ_CHECK(f.end == text.size() || !IsAlnum(text[f.end]));
}

void CheckEmail(std::string_view text, const sb::safety::PiiFinding& f) {
  const std::string_view span = text.substr(f.start, f.end - f.start);
  SB_FUZZ_CHECK(std::count(span.begin(), span.end(), '@') == 1);
  const size_t at = span.find('@');
  SB_FUZZ_CHECK(at > 0 && at + 1 < span.size());
  const std::string_view domain = span.substr(at + 1);
  const size_t dot = domain.rfind('.');
  SB_FUZZ_CHECK(dot != std::string_view::npos && dot > 0);
  const std::string_view tld = domain.substr(dot + 1);
  SB_FUZZ_CHECK(tld.size() >= 2);
  for (char c : tld) SB_FUZZ_CHECK(std::isalpha(static_cast<unsigned char>(c)));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto findings = sb::safety::FindPii(text);
  for (size_t i = 0; i < findings.size(); ++i) {
    const auto& f = findings[i];
    SB_FUZZ_CHECK(f.start < f.end && f.end <= text.size());
    if (i > 0) SB_FUZZ_CHECK(findings[i - 1].start <= f.start);  // sorted
    if (f.category == "pii.card_number") {
      CheckCard(text, f);
    } else {
      SB_FUZZ_CHECK(f.category == "pii.email");
      CheckEmail(text, f);
    }
    // A finding is found again in its own span alone, whole: the scanners
    // decide from the span and its edges, not from text far away.
    const auto alone = sb::safety::FindPii(text.substr(f.start, f.end - f.start));
    SB_FUZZ_CHECK(std::any_of(alone.begin(), alone.end(), [&](const sb::safety::PiiFinding& g) {
      return g.category == f.category && g.start == 0 && g.end == f.end - f.start;
    }));
  }
  // LuhnValid on raw input: never true for anything but digits.
  if (sb::safety::LuhnValid(text)) {
    SB_FUZZ_CHECK(std::all_of(text.begin(), text.end(), IsDigit));
  }
  return 0;
}
