// The safety decision for one piece of text, independent of gRPC: the rules
// (rules.h), the org's blocklist and, on input, the prompt-injection
// heuristics and the size limit, each acted on as the org's policy says
// (org_policy.h). The default policy blocks personal data and secrets both
// ways: a prompt carrying them is refused, and output carrying them ends
// the stream (no partial card number or address reaches a client).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "safety/org_policy.h"
#include "safety/rules.h"

namespace sb::safety {

struct Decision {
  Finding finding;  // offsets in the text as written
  Action action = Action::kBlock;
};

struct Verdict {
  bool allowed = true;
  std::string reason;  // shown to the caller when blocked
  // Every finding the policy does not simply allow, with its action.
  std::vector<Decision> decisions;
  int64_t policy_version = 0;
  int64_t platform_policy_version = 0;
};

// Unary: a redact action on output counts as block (there is no stream to
// redact in; ModerateOutput's gate redacts).
Verdict Evaluate(std::string_view text, Direction direction,
                 const Policy& policy = *Policy::Default());
// Why a reply stopped (or a prompt was refused) at `blocked`.
std::string Explain(const std::vector<Finding>& blocked, Direction direction);

// The input-only heuristics, on normalised text: instruction-override
// phrases ("ignore all previous instructions") and role spoofing ("system:"
// at the start of a line, chat-template markers).
std::vector<Finding> FindInjection(std::string_view normalized);

}  // namespace sb::safety
