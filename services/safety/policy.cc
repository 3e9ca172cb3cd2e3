#include "safety/policy.h"

#include <set>

namespace sb::safety {
namespace {

std::string Describe(const std::string& category) {
  if (category == "pii.email") return "an e-mail address";
  if (category == "pii.card_number") return "a payment card number";
  return category;
}

}  // namespace

Verdict Evaluate(std::string_view text, Direction direction) {
  return Explain(FindPii(text), direction);
}

Verdict Explain(std::vector<PiiFinding> findings, Direction direction) {
  Verdict v;
  v.findings = std::move(findings);
  if (v.findings.empty()) return v;
  v.allowed = false;
  std::set<std::string> kinds;
  for (const auto& f : v.findings) kinds.insert(Describe(f.category));
  std::string list;
  for (const auto& k : kinds) list += (list.empty() ? "" : " and ") + k;
  v.reason = (direction == Direction::kInput ? "the input contains " : "the output contained ") +
             list + ", which this platform's safety policy does not allow";
  return v;
}

}  // namespace sb::safety
