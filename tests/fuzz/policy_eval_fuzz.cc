// Text -> the safety decision (safety::Evaluate) in both directions. The
// policy is code, not configuration: there is nothing loaded from text in
// services/safety yet, so this fuzzes the decision itself.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_check.h"
#include "safety/policy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto direction =
      (data[0] & 1) != 0 ? sb::safety::Direction::kOutput : sb::safety::Direction::kInput;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  const sb::safety::Verdict v = sb::safety::Evaluate(text, direction);
  // Blocked exactly when something was found, and then always with a
  // reason to show (it must not echo the personal data it found).
  SB_FUZZ_CHECK(v.allowed == v.findings.empty());
  SB_FUZZ_CHECK(v.allowed == v.reason.empty());
  for (const auto& f : v.findings) {
    SB_FUZZ_CHECK(f.start < f.end && f.end <= text.size());
    const std::string_view found = text.substr(f.start, f.end - f.start);
    SB_FUZZ_CHECK(v.reason.find(found) == std::string::npos);
  }
  // The decision does not depend on the direction, only its wording.
  const sb::safety::Verdict other = sb::safety::Evaluate(
      text, direction == sb::safety::Direction::kInput ? sb::safety::Direction::kOutput
                                                       : sb::safety::Direction::kInput);
  SB_FUZZ_CHECK(other.allowed == v.allowed && other.findings.size() == v.findings.size());
  return 0;
}
