// Bytes -> an org's safety policy (Policy::Parse), or text -> the safety
// decision (Evaluate) in both directions under the default policy and a
// strict one. A policy is configuration an operator writes: parsing never
// crashes, and what it accepts it stores in a form that parses to itself.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_check.h"
#include "safety/policy.h"

namespace {

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// The personal-data and secret decisions (the same both ways by default).
size_t DataDecisions(const sb::safety::Verdict& v) {
  size_t n = 0;
  for (const auto& d : v.decisions) {
    n += StartsWith(d.finding.category, "pii.") || StartsWith(d.finding.category, "secret.");
  }
  return n;
}

void CheckVerdict(const sb::safety::Verdict& v, std::string_view text) {
  bool blocked = false;
  for (const auto& d : v.decisions) {
    const auto& f = d.finding;
    SB_FUZZ_CHECK(f.start < f.end && f.end <= text.size());
    SB_FUZZ_CHECK(d.action != sb::safety::Action::kAllow);
    blocked |= d.action == sb::safety::Action::kBlock || d.action == sb::safety::Action::kRedact;
    // The reason never echoes the data it found.
    if (StartsWith(f.category, "pii.") || StartsWith(f.category, "secret.")) {
      SB_FUZZ_CHECK(v.reason.find(text.substr(f.start, f.end - f.start)) == std::string::npos);
    }
  }
  SB_FUZZ_CHECK(v.allowed == !blocked);
  SB_FUZZ_CHECK(v.allowed == v.reason.empty());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if ((data[0] & 2) != 0) {
    auto policy = sb::safety::Policy::Parse(rest, 1);
    if (policy.ok()) {
      auto again = sb::safety::Policy::Parse((*policy)->json(), 1);
      SB_FUZZ_CHECK(again.ok() && (*again)->json() == (*policy)->json());
    }
    return 0;
  }
  static const auto strict = *sb::safety::Policy::Parse(
      R"({"rules": {"injection.override": {"input": "block"}, "injection.role": {"input": "block"},
                    "pii.email": {"output": "redact"}},
          "blocklist": {"terms": ["bluebird"], "patterns": ["x[0-9]+y"]}, "max_input_bytes": 64})",
      1);
  for (const auto* policy : {sb::safety::Policy::Default().get(), strict.get()}) {
    const sb::safety::Verdict in =
        sb::safety::Evaluate(rest, sb::safety::Direction::kInput, *policy);
    const sb::safety::Verdict out =
        sb::safety::Evaluate(rest, sb::safety::Direction::kOutput, *policy);
    CheckVerdict(in, rest);
    CheckVerdict(out, rest);
    if (policy == sb::safety::Policy::Default().get()) {
      SB_FUZZ_CHECK(DataDecisions(in) == DataDecisions(out));
    }
  }
  return 0;
}
