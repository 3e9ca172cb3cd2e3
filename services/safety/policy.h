// The safety decision for one piece of text, independent of gRPC. The
// default policy blocks personal data both ways: a prompt carrying it is
// refused, and output carrying it ends the stream (no partial card number or
// address reaches a client).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "safety/pii.h"

namespace sb::safety {

struct Verdict {
  bool allowed = true;
  std::string reason;  // shown to the caller when blocked
  std::vector<PiiFinding> findings;
};

enum class Direction { kInput, kOutput };

Verdict Evaluate(std::string_view text, Direction direction);
// The verdict on text in which `findings` were found (allowed when none).
Verdict Explain(std::vector<PiiFinding> findings, Direction direction);

}  // namespace sb::safety
